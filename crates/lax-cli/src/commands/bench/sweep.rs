//! `lax bench sweep`: LAX and raw async-nats over a grid of concurrencies and payload sizes on
//! one route, as a table and one self-contained HTML report with SVG plots (throughput and p99
//! against concurrency, LAX beside raw).

use std::{fmt::Write as _, path::PathBuf};

use clap::Args;
use serde_json::json;

use super::{
    Bench, TargetArgs, Workload,
    driver::Plan,
    report::{Figures, latency, round2},
};
use crate::{
    chart::{Scale, escape, line_chart},
    client_args::connect,
    failure::Failure,
};

/// Options of `lax bench sweep`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SweepArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Messages per run (fewer for large payloads: see --max-mb).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    msgs: u64,
    /// Publishes in flight, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 256, 4096])]
    concurrency: Vec<usize>,
    /// Payload sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [128usize, 1024, 65536])]
    sizes: Vec<usize>,
    /// Most megabytes one run publishes: large payloads get fewer messages.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    max_mb: u64,
    /// Where to write the HTML report.
    #[arg(long, value_name = "FILE", default_value = "lax-sweep.html")]
    html: PathBuf,
    /// Print the rows as one JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

/// One cell of the grid: LAX and raw on the same workload.
#[derive(Debug)]
pub(super) struct Row {
    pub(super) size: usize,
    pub(super) concurrency: usize,
    pub(super) lax: Figures,
    pub(super) raw: Figures,
}

impl SweepArgs {
    fn workloads(&self) -> Result<Vec<Workload>, Failure> {
        let (route, tier) = self.target.route_and_tier()?;
        let subject = self.target.subject(route, tier);
        if self.concurrency.contains(&0) {
            return Err(Failure::usage("--concurrency values must be at least 1"));
        }
        let mut workloads = Vec::new();
        for &size in &self.sizes {
            let budget = self.max_mb * 1_000_000 / size.max(1) as u64;
            for &concurrency in &self.concurrency {
                workloads.push(Workload {
                    route,
                    tier,
                    subject: subject.clone(),
                    size,
                    batch: 1,
                    plan: Plan {
                        msgs: self.msgs.min(budget).max(1),
                        concurrency,
                        rate: None,
                    },
                    e2e: false,
                });
            }
        }
        Ok(workloads)
    }
}

pub(super) async fn run(args: SweepArgs) -> Result<(), Failure> {
    let workloads = args.workloads()?;
    let options = args.target.client.options()?;
    let bench = Bench::new(&options, &args.target, args.json)?;
    let client = connect(&options).await?;
    if !args.json {
        println!("{}", header());
    }
    let mut rows = Vec::new();
    for workload in &workloads {
        let lax = match bench.measure_lax(&client, workload).await {
            Ok(lax) => lax,
            Err(failure) => {
                let _ = client.close().await;
                return Err(failure);
            }
        };
        let raw = bench.measure_raw(workload).await?;
        let row = Row {
            size: workload.size,
            concurrency: workload.plan.concurrency,
            lax,
            raw,
        };
        if !args.json {
            println!("{}", row.line());
        }
        rows.push(row);
    }
    client.close().await?;
    let (route, tier) = args.target.route_and_tier()?;
    let title = format!("lax bench sweep — route {route}, tier {tier}");
    std::fs::write(&args.html, html(&title, &rows))
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", args.html.display())))?;
    if args.json {
        println!("{}", json(&rows));
    } else {
        println!("report written to {}", args.html.display());
    }
    Ok(())
}

/// The table's columns: name and width.
const COLUMNS: [(&str, usize); 13] = [
    ("size", 6),
    ("conc", 5),
    ("msgs", 8),
    ("LAX msg/s", 11),
    ("raw msg/s", 11),
    ("ratio", 6),
    ("LAX p99", 10),
    ("raw p99", 10),
    ("cli µs", 7),
    ("raw cli", 7),
    ("brk µs", 7),
    ("srv µs", 7),
    ("raw srv", 7),
];

/// Cells right-aligned to the columns' widths.
fn aligned<S: AsRef<str>>(cells: &[S]) -> String {
    let padded: Vec<String> = cells
        .iter()
        .zip(COLUMNS)
        .map(|(cell, (_, width))| format!("{:>width$}", cell.as_ref()))
        .collect();
    padded.join(" ")
}

/// The table's header line.
fn header() -> String {
    aligned(&COLUMNS.map(|(name, _)| name))
}

/// `12.34`, or `-` when unknown.
fn cpu_cell(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

impl Row {
    fn ratio(&self) -> f64 {
        self.lax.msgs_per_sec() / self.raw.msgs_per_sec().max(f64::EPSILON)
    }

    fn cells(&self) -> [String; COLUMNS.len()] {
        let (lax_cpu, raw_cpu) = (self.lax.cpu, self.raw.cpu);
        [
            self.size.to_string(),
            self.concurrency.to_string(),
            self.lax.msgs().to_string(),
            format!("{:.0}", self.lax.msgs_per_sec()),
            format!("{:.0}", self.raw.msgs_per_sec()),
            format!("{:.3}", self.ratio()),
            latency(self.lax.quantile_us(0.99)),
            latency(self.raw.quantile_us(0.99)),
            cpu_cell(lax_cpu.map(|c| c.client)),
            cpu_cell(raw_cpu.map(|c| c.client)),
            cpu_cell(lax_cpu.and_then(|c| c.broker)),
            cpu_cell(lax_cpu.and_then(|c| c.server)),
            cpu_cell(raw_cpu.and_then(|c| c.server)),
        ]
    }

    fn line(&self) -> String {
        aligned(&self.cells())
    }

    fn json(&self) -> serde_json::Value {
        let side = |figures: &Figures| {
            json!({
                "msgs": figures.msgs(),
                "msgs_per_sec": round2(figures.msgs_per_sec()),
                "p50_us": round2(figures.quantile_us(0.5)),
                "p99_us": round2(figures.quantile_us(0.99)),
                "p999_us": round2(figures.quantile_us(0.999)),
                "client_cpu_us_per_msg": figures.cpu.map(|c| round2(c.client)),
                "broker_cpu_us_per_msg": figures.cpu.and_then(|c| c.broker).map(round2),
                "server_cpu_us_per_msg": figures.cpu.and_then(|c| c.server).map(round2),
            })
        };
        json!({
            "size": self.size,
            "concurrency": self.concurrency,
            "ratio": (self.ratio() * 1000.0).round() / 1000.0,
            "lax": side(&self.lax),
            "raw": side(&self.raw),
        })
    }
}

fn json(rows: &[Row]) -> serde_json::Value {
    serde_json::Value::Array(rows.iter().map(Row::json).collect())
}

/// One self-contained page: the table, then per payload size a throughput plot and a p99
/// plot against concurrency.
pub(super) fn html(title: &str, rows: &[Row]) -> String {
    let mut table = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .cells()
            .iter()
            .map(|cell| format!("<td>{}</td>", escape(cell)))
            .collect();
        let _ = writeln!(table, "<tr>{}</tr>", cells.concat());
    }
    let heads: Vec<String> = COLUMNS
        .iter()
        .map(|(name, _)| format!("<th>{}</th>", escape(name)))
        .collect();
    let mut plots = String::new();
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.size).collect();
    sizes.dedup();
    for size in sizes {
        let cells: Vec<&Row> = rows.iter().filter(|r| r.size == size).collect();
        let x: Vec<String> = cells.iter().map(|r| r.concurrency.to_string()).collect();
        let series = |f: fn(&Figures) -> f64| -> [(&str, Vec<f64>); 2] {
            [
                ("LAX", cells.iter().map(|r| f(&r.lax)).collect()),
                ("raw", cells.iter().map(|r| f(&r.raw)).collect()),
            ]
        };
        let _ = writeln!(
            plots,
            "<h2>{size} B</h2>\n<div class=\"row\">{}{}</div>",
            line_chart(
                &format!("throughput, {size} B (msg/s)"),
                "publishes in flight",
                &x,
                &series(Figures::msgs_per_sec),
                Scale::Linear
            ),
            line_chart(
                &format!("p99 latency, {size} B (µs)"),
                "publishes in flight",
                &x,
                &series(|f| f.quantile_us(0.99)),
                Scale::Log
            ),
        );
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}
.row {{ display: flex; flex-wrap: wrap; gap: 1em; }}
</style></head>
<body>
<h1>{title}</h1>
<p>Columns: payload size (B), publishes in flight, messages per run, throughput of LAX and raw async-nats, LAX/raw, p99 latency, CPU µs per message of the client (LAX, raw), the broker and nats-server (LAX, raw).</p>
<table>
<tr>{heads}</tr>
{table}</table>
{plots}</body></html>
"#,
        title = escape(title),
        heads = heads.concat(),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::commands::bench::{cpu::CpuPerMsg, driver::latency_histogram};

    fn figures(label: &'static str, concurrency: usize, per_sec: u64, p99_ns: u64) -> Figures {
        let mut latencies = latency_histogram();
        for _ in 0..per_sec {
            latencies.record(p99_ns).unwrap();
        }
        Figures {
            label,
            concurrency,
            batch: 1,
            latencies,
            elapsed: Duration::from_secs(1),
            lateness: None,
            cpu: Some(CpuPerMsg {
                client: 6.0,
                broker: Some(3.0),
                server: Some(7.0),
                waiting: Default::default(),
            }),
            delivered: None,
        }
    }

    fn rows() -> Vec<Row> {
        let mut rows = Vec::new();
        for size in [128, 1024] {
            for (i, concurrency) in [1, 16, 256].into_iter().enumerate() {
                let base = 1_000 * (i as u64 + 1);
                rows.push(Row {
                    size,
                    concurrency,
                    lax: figures("LAX", concurrency, base, 200_000),
                    raw: figures("raw", concurrency, 2 * base, 100_000),
                });
            }
        }
        rows
    }

    #[test]
    fn the_report_has_a_throughput_and_a_p99_plot_per_size_with_both_sides() {
        let html = html("sweep <broker>", &rows());
        assert_eq!(html.matches("<svg").count(), 4, "2 sizes × 2 plots");
        assert_eq!(html.matches("<polyline").count(), 8, "LAX and raw in each");
        assert!(html.contains("throughput, 128 B") && html.contains("p99 latency, 1024 B"));
        assert!(html.contains("sweep &lt;broker&gt;"));
        assert!(
            !html.contains("<script") && !html.contains("src="),
            "self-contained"
        );
        // 6 rows of 13 cells; ratio 0.5 everywhere.
        assert_eq!(html.matches("<tr>").count(), 7);
        assert_eq!(html.matches("<td>0.500</td>").count(), 6);
        assert_eq!(html.matches("<th>").count(), 13);
        assert_eq!(html.matches("<td>200.1 µs</td>").count(), 6);
    }

    #[test]
    fn rows_print_the_ratio_and_cpu_and_serialize() {
        let rows = rows();
        let line = rows[2].line();
        assert!(line.contains("0.500"), "{line}");
        // 3 significant digits: 200 µs is stored as 200.06 µs.
        assert!(
            line.contains("200.1 µs") && line.contains("100.0 µs"),
            "{line}"
        );
        assert_eq!(
            header().chars().count(),
            line.chars().count(),
            "columns line up"
        );
        let json = json(&rows);
        assert_eq!(json[2]["concurrency"], 256);
        assert_eq!(json[2]["lax"]["msgs_per_sec"], 3_000.0);
        assert_eq!(json[2]["raw"]["server_cpu_us_per_msg"], 7.0);
    }

    #[test]
    fn large_payloads_get_fewer_messages() {
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            sweep: SweepArgs,
        }
        let cli = Cli::try_parse_from(["sweep", "--route", "broker", "--max-mb", "64"]).unwrap();
        let workloads = cli.sweep.workloads().unwrap();
        assert_eq!(workloads.len(), 12);
        let msgs: Vec<u64> = workloads.iter().map(|w| w.plan.msgs).collect();
        assert_eq!(msgs[0], 20_000);
        assert_eq!(msgs[11], 64_000_000 / 65_536);
        assert_eq!(workloads[5].plan.concurrency, 16);
        assert_eq!(workloads[5].size, 1024);
    }
}
