//! The figures of a benchmark run as text, JSON and a self-contained HTML report.

use std::{fmt::Write as _, time::Duration};

use hdrhistogram::Histogram;
use lax_client::Route;
use serde_json::json;

use super::{Workload, cpu::CpuPerMsg, e2e::Delivered};
use crate::chart::{SERIES_COLORS, escape};

/// The percentiles reported, as (label, quantile).
const PERCENTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

/// The colours of LAX's and raw's curves in the plots.
/// One measured run.
#[derive(Debug)]
pub(super) struct Figures {
    pub(super) label: &'static str,
    pub(super) concurrency: usize,
    /// Messages per publish call (1, or the batch size); latencies are per call.
    pub(super) batch: u64,
    pub(super) latencies: Histogram<u64>,
    pub(super) elapsed: Duration,
    /// Paced runs: the pacer's lateness.
    pub(super) lateness: Option<Histogram<u64>>,
    pub(super) cpu: Option<CpuPerMsg>,
    /// `--e2e`: what the subscriber saw.
    pub(super) delivered: Option<Delivered>,
}

impl Figures {
    pub(super) fn msgs(&self) -> u64 {
        self.latencies.len() * self.batch
    }

    pub(super) fn msgs_per_sec(&self) -> f64 {
        self.msgs() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Latency at `quantile`, in microseconds.
    pub(super) fn quantile_us(&self, quantile: f64) -> f64 {
        quantile_us(&self.latencies, quantile)
    }

    fn max_us(&self) -> f64 {
        self.latencies.max() as f64 / 1e3
    }

    /// Every figure as JSON fields named with `prefix` (`""` for LAX, `"raw_"` for raw).
    fn json_fields(&self, prefix: &str, size: usize) -> serde_json::Map<String, serde_json::Value> {
        let mut fields = serde_json::Map::new();
        let mut put = |name: &str, value: serde_json::Value| {
            fields.insert(format!("{prefix}{name}"), value);
        };
        put("concurrency", json!(self.concurrency));
        put("elapsed_s", json!(round2(self.elapsed.as_secs_f64())));
        put("msgs_per_sec", json!(round2(self.msgs_per_sec())));
        put(
            "mb_per_sec",
            json!(round2(self.msgs_per_sec() * size as f64 / 1e6)),
        );
        for (name, quantile) in JSON_PERCENTILES {
            put(
                &format!("{name}_us"),
                json!(round2(self.quantile_us(quantile))),
            );
        }
        put("max_us", json!(round2(self.max_us())));
        if let Some(lateness) = &self.lateness {
            for (name, quantile) in [("p50", 0.5), ("p99", 0.99)] {
                put(
                    &format!("pacer_lateness_{name}_us"),
                    json!(round2(quantile_us(lateness, quantile))),
                );
            }
            put(
                "pacer_lateness_max_us",
                json!(round2(lateness.max() as f64 / 1e3)),
            );
        }
        if let Some(cpu) = &self.cpu {
            put("client_cpu_us_per_msg", json!(round2(cpu.client)));
            put("broker_cpu_us_per_msg", json!(cpu.broker.map(round2)));
            put("server_cpu_us_per_msg", json!(cpu.server.map(round2)));
            let waiting = &cpu.waiting;
            put(
                "client_cpu_wait_us_per_msg",
                json!(waiting.client.map(round2)),
            );
            put(
                "broker_cpu_wait_us_per_msg",
                json!(waiting.broker.map(round2)),
            );
            put(
                "server_cpu_wait_us_per_msg",
                json!(waiting.server.map(round2)),
            );
        }
        if let Some(delivered) = &self.delivered {
            put("e2e_received", json!(delivered.received));
            put("e2e_expected", json!(delivered.expected));
            for (name, quantile) in JSON_PERCENTILES {
                put(
                    &format!("e2e_{name}_us"),
                    json!(round2(quantile_us(&delivered.latencies, quantile))),
                );
            }
        }
        fields
    }

    /// The lines of this run in the text report.
    fn text(&self, size: usize) -> String {
        let mut text = format!(
            "  {:<4} {:>12.0} msg/s {:>8.1} MB/s  in {:.2} s, {} in flight{}\n",
            self.label,
            self.msgs_per_sec(),
            self.msgs_per_sec() * size as f64 / 1e6,
            self.elapsed.as_secs_f64(),
            self.concurrency,
            if self.batch > 1 {
                format!(" (batches of {})", self.batch)
            } else {
                String::new()
            }
        );
        let per = if self.batch > 1 { " per batch" } else { "" };
        let _ = writeln!(
            text,
            "       latency{per}{}",
            percentiles_line(&self.latencies)
        );
        if let Some(delivered) = &self.delivered {
            let _ = writeln!(
                text,
                "       publish→delivery{}  ({} of {} delivered)",
                percentiles_line(&delivered.latencies),
                delivered.received,
                delivered.expected
            );
        }
        if let Some(lateness) = &self.lateness {
            let _ = writeln!(
                text,
                "       pacer lateness  p50 {}  p99 {}  max {}",
                latency(quantile_us(lateness, 0.5)),
                latency(quantile_us(lateness, 0.99)),
                latency(lateness.max() as f64 / 1e3)
            );
        }
        if let Some(cpu) = &self.cpu {
            let mut line = format!("       CPU per message  client {:.2} µs", cpu.client);
            if let Some(broker) = cpu.broker {
                let _ = write!(line, "  broker {broker:.2} µs");
            }
            if let Some(server) = cpu.server {
                let _ = write!(line, "  nats-server {server:.2} µs");
            }
            let _ = writeln!(text, "{line}");
            let waiting = &cpu.waiting;
            let mut line = String::from("       waiting for a CPU");
            for (process, waited) in [
                ("client", waiting.client),
                ("broker", waiting.broker),
                ("nats-server", waiting.server),
            ] {
                if let Some(waited) = waited {
                    let _ = write!(line, "  {process} {waited:.2} µs");
                }
            }
            let _ = writeln!(text, "{line}");
        }
        text
    }
}

/// The percentiles in JSON, as (field name, quantile).
const JSON_PERCENTILES: [(&str, f64); 4] =
    [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)];

/// `h`'s value at `quantile`, in microseconds.
fn quantile_us(h: &Histogram<u64>, quantile: f64) -> f64 {
    h.value_at_quantile(quantile) as f64 / 1e3
}

/// `  p50 1.0 µs  p90 …  max …` for a text report.
fn percentiles_line(h: &Histogram<u64>) -> String {
    let mut line = String::new();
    for (label, quantile) in PERCENTILES {
        let _ = write!(line, "  {label} {}", latency(quantile_us(h, quantile)));
    }
    let _ = write!(line, "  max {}", latency(h.max() as f64 / 1e3));
    line
}

/// LAX's figures, and raw async-nats' when compared.
#[derive(Debug)]
pub(super) struct Comparison<'a> {
    pub(super) workload: &'a Workload,
    pub(super) lax: &'a Figures,
    pub(super) raw: Option<&'a Figures>,
}

/// Rounds to 2 decimals for JSON.
pub(super) fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// `1.23 µs`, `45.6 ms`.
pub(super) fn latency(us: f64) -> String {
    if us >= 1_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

impl Comparison<'_> {
    /// LAX throughput over raw throughput.
    fn ratio(&self) -> Option<f64> {
        self.raw
            .map(|raw| self.lax.msgs_per_sec() / raw.msgs_per_sec().max(f64::EPSILON))
    }

    /// One JSON object with the workload and the figures.
    pub(super) fn json(&self) -> serde_json::Value {
        let w = self.workload;
        let mut figures = json!({
            "route": w.route,
            "tier": w.tier,
            "subject": w.subject,
            "msgs": self.lax.msgs(),
            "size": w.size,
            "batch": w.batch,
            "rate": w.plan.rate.map(|rate| rate * w.batch),
            "e2e": w.e2e,
        });
        if let Some(object) = figures.as_object_mut() {
            object.extend(self.lax.json_fields("", w.size));
            if let (Some(raw), Some(ratio)) = (self.raw, self.ratio()) {
                object.extend(raw.json_fields("raw_", w.size));
                object.insert("ratio".to_owned(), json!((ratio * 1000.0).round() / 1000.0));
                object.insert(
                    "p99_minus_raw_us".to_owned(),
                    json!(round2(self.lax.quantile_us(0.99) - raw.quantile_us(0.99))),
                );
                object.insert(
                    "p999_over_raw".to_owned(),
                    json!(round2(
                        self.lax.quantile_us(0.999) / raw.quantile_us(0.999).max(f64::EPSILON)
                    )),
                );
            }
        }
        figures
    }

    /// A few lines for a person.
    pub(super) fn text(&self) -> String {
        let w = self.workload;
        let mut text = format!(
            "lax bench: {} msgs × {} B to {}, route {}, tier {}, {}{}\n",
            self.lax.msgs(),
            w.size,
            w.subject,
            w.route,
            w.tier,
            if w.route == Route::Broker {
                "acked, "
            } else {
                ""
            },
            pace(w)
        );
        for figures in std::iter::once(self.lax).chain(self.raw) {
            text.push_str(&figures.text(w.size));
        }
        if let Some(ratio) = self.ratio() {
            let _ = writeln!(text, "  ratio LAX / raw throughput: {ratio:.3}");
        }
        text
    }

    /// A self-contained HTML page: the workload, the figures and an inline SVG plot of
    /// latency by percentile.
    pub(super) fn html(&self) -> String {
        let w = self.workload;
        let mut rows = String::new();
        for figures in std::iter::once(self.lax).chain(self.raw) {
            let _ = write!(
                rows,
                "<tr><th>{}</th><td>{:.0}</td><td>{}</td>",
                figures.label,
                figures.msgs_per_sec(),
                figures.concurrency
            );
            for (_, quantile) in PERCENTILES {
                let _ = write!(rows, "<td>{}</td>", latency(figures.quantile_us(quantile)));
            }
            let _ = writeln!(rows, "<td>{}</td></tr>", latency(figures.max_us()));
        }
        let ratio = self
            .ratio()
            .map(|r| format!("<p>LAX / raw throughput: <b>{r:.3}</b></p>"))
            .unwrap_or_default();
        format!(
            r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lax bench — {subject}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: right; }}
</style></head>
<body>
<h1>lax bench</h1>
<p>{msgs} messages of {size} bytes to <code>{subject}</code>, route <b>{route}</b>, tier <b>{tier}</b>, {pace}.</p>
<table>
<tr><th></th><th>msg/s</th><th>in flight</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>
{rows}</table>
{ratio}
<h2>Latency by percentile</h2>
{svg}
</body></html>
"#,
            subject = escape(&w.subject),
            msgs = self.lax.msgs(),
            size = w.size,
            route = w.route,
            tier = w.tier,
            pace = pace(w),
            svg = self.svg(),
        )
    }

    /// Latency (log scale) against percentile on a "nines" scale (0, 90, 99, 99.9, …).
    fn svg(&self) -> String {
        const WIDTH: f64 = 760.0;
        const HEIGHT: f64 = 400.0;
        const LEFT: f64 = 70.0;
        const RIGHT: f64 = 20.0;
        const TOP: f64 = 20.0;
        const BOTTOM: f64 = 50.0;
        const STEPS_PER_NINE: u32 = 25;

        let runs: Vec<&Figures> = std::iter::once(self.lax).chain(self.raw).collect();
        // As many nines as the sample supports, at least 2 and at most 5.
        let nines = (self.lax.msgs().max(1) as f64)
            .log10()
            .floor()
            .clamp(2.0, 5.0) as u32;
        let curves: Vec<Vec<(f64, f64)>> = runs
            .iter()
            .map(|figures| {
                (0..=nines * STEPS_PER_NINE)
                    .map(|step| {
                        let x = f64::from(step) / f64::from(STEPS_PER_NINE);
                        let quantile = 1.0 - 10f64.powf(-x);
                        (x, figures.quantile_us(quantile).max(0.01))
                    })
                    .collect()
            })
            .collect();
        let (lowest, highest) = curves
            .iter()
            .flatten()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &(_, y)| {
                (lo.min(y), hi.max(y))
            });
        let y_min = lowest.log10().floor();
        let y_max = highest.log10().ceil().max(y_min + 1.0);
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let px = |x: f64| LEFT + x / f64::from(nines) * plot_w;
        let py = |us: f64| TOP + (y_max - us.log10()) / (y_max - y_min) * plot_h;

        let mut svg = format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#999"/>
"##
        );
        for decade in (y_min as i32)..=(y_max as i32) {
            let us = 10f64.powi(decade);
            let y = py(us);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                y + 4.0,
                tick_label(us)
            );
        }
        for nine in 0..=nines {
            let x = px(f64::from(nine));
            let label = match nine {
                0 => "0%".to_owned(),
                n => format!("{}%", 100.0 - 100.0 * 10f64.powi(-(n as i32))),
            };
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
                TOP + plot_h,
                TOP + plot_h + 18.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text><text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">latency</text>"#,
            LEFT + plot_w / 2.0,
            HEIGHT - 8.0,
            TOP + plot_h / 2.0,
            TOP + plot_h / 2.0
        );
        for (index, (figures, curve)) in runs.iter().zip(&curves).enumerate() {
            let color = SERIES_COLORS[index % SERIES_COLORS.len()];
            let points: Vec<String> = curve
                .iter()
                .map(|&(x, us)| format!("{:.1},{:.1}", px(x), py(us)))
                .collect();
            let _ = writeln!(
                svg,
                r##"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/><rect x="{:.1}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"##,
                points.join(" "),
                LEFT + 12.0,
                TOP + 10.0 + 18.0 * index as f64,
                LEFT + 30.0,
                TOP + 20.0 + 18.0 * index as f64,
                figures.label
            );
        }
        svg.push_str("</svg>");
        svg
    }
}

/// `paced at 5000 msg/s` or `unpaced`.
fn pace(w: &Workload) -> String {
    match w.plan.rate {
        Some(rate) => format!("paced at {} msg/s", rate * w.batch),
        None => "unpaced".to_owned(),
    }
}

/// A power-of-ten latency as a short axis label: `1 ms`, `100 µs`, `0.1 µs`.
fn tick_label(us: f64) -> String {
    if us >= 1_000.0 {
        format!("{} ms", us / 1e3)
    } else {
        format!("{us} µs")
    }
}

#[cfg(test)]
mod tests {
    use lax_client::Tier;

    use super::*;
    use crate::commands::bench::{
        cpu::WaitPerMsg,
        driver::{Plan, latency_histogram},
    };

    fn figures(label: &'static str, base_ns: u64, elapsed: Duration) -> Figures {
        let mut latencies = latency_histogram();
        for i in 0..10_000u64 {
            latencies.record(base_ns + i * 10).unwrap();
        }
        Figures {
            label,
            concurrency: 4,
            batch: 1,
            latencies,
            elapsed,
            lateness: None,
            cpu: Some(CpuPerMsg {
                client: 5.0,
                broker: Some(3.5),
                server: None,
                waiting: WaitPerMsg {
                    client: Some(1.25),
                    broker: Some(4.0),
                    server: None,
                },
            }),
            delivered: None,
        }
    }

    fn workload() -> Workload {
        Workload {
            route: Route::Broker,
            tier: Tier::Persistent,
            subject: "bench_<x>.broker".into(),
            size: 128,
            batch: 1,
            e2e: false,
            plan: Plan {
                msgs: 10_000,
                concurrency: 4,
                rate: None,
            },
        }
    }

    #[test]
    fn json_has_the_figures_and_the_ratio() {
        let workload = workload();
        let lax = figures("LAX", 1_000, Duration::from_secs(2));
        let raw = figures("raw", 500, Duration::from_secs(1));
        let json = Comparison {
            workload: &workload,
            lax: &lax,
            raw: Some(&raw),
        }
        .json();
        assert_eq!(json["route"], "broker");
        assert_eq!(json["tier"], "persistent");
        assert_eq!(json["msgs"], 10_000);
        assert_eq!(json["msgs_per_sec"], 5_000.0);
        assert_eq!(json["raw_msgs_per_sec"], 10_000.0);
        assert_eq!(json["ratio"], 0.5);
        let p50 = json["p50_us"].as_f64().unwrap();
        assert!((50.0..52.0).contains(&p50), "{p50}");
        assert!(json["p999_us"].as_f64().unwrap() <= json["max_us"].as_f64().unwrap());
        assert_eq!(json["raw_concurrency"], 4, "raw runs at LAX's concurrency");
        assert_eq!(json["client_cpu_us_per_msg"], 5.0);
        assert_eq!(json["broker_cpu_us_per_msg"], 3.5);
        assert!(json["server_cpu_us_per_msg"].is_null());
        assert_eq!(json["client_cpu_wait_us_per_msg"], 1.25);
        assert_eq!(json["broker_cpu_wait_us_per_msg"], 4.0);
        assert!(json["server_cpu_wait_us_per_msg"].is_null());
        assert_eq!(json["raw_broker_cpu_wait_us_per_msg"], 4.0);
        // 500 ns apart at every percentile, within the histogram's 3 significant digits.
        let p99_delta = json["p99_minus_raw_us"].as_f64().unwrap();
        assert!((0.4..0.6).contains(&p99_delta), "{p99_delta}");
        assert!(json.get("pacer_lateness_p99_us").is_none(), "unpaced");
    }

    #[test]
    fn html_is_self_contained_with_a_plot_of_both_runs() {
        let workload = workload();
        let lax = figures("LAX", 1_000, Duration::from_secs(2));
        let raw = figures("raw", 500, Duration::from_secs(1));
        let comparison = Comparison {
            workload: &workload,
            lax: &lax,
            raw: Some(&raw),
        };
        let html = comparison.html();
        assert!(html.contains("<svg"), "no plot");
        assert_eq!(html.matches("<polyline").count(), 2);
        assert!(html.contains("bench_&lt;x&gt;.broker"));
        assert!(
            !html.contains("src=") && !html.contains("<link"),
            "no external assets"
        );
        let text = comparison.text();
        assert!(text.contains("ratio LAX / raw throughput: 0.500"), "{text}");
    }

    #[test]
    fn a_paced_end_to_end_run_reports_the_pacer_and_the_deliveries() {
        let mut workload = workload();
        workload.plan.rate = Some(5_000);
        workload.e2e = true;
        let mut lax = figures("LAX", 1_000, Duration::from_secs(2));
        lax.lateness = Some(figures("late", 2_000, Duration::from_secs(1)).latencies);
        lax.delivered = Some(Delivered {
            latencies: figures("e2e", 3_000, Duration::from_secs(1)).latencies,
            received: 9_999,
            expected: 10_000,
            ticks: 0,
        });
        let comparison = Comparison {
            workload: &workload,
            lax: &lax,
            raw: None,
        };
        let text = comparison.text();
        assert!(text.contains("paced at 5000 msg/s"), "{text}");
        assert!(text.contains("pacer lateness  p50 52"), "{text}");
        assert!(text.contains("(9999 of 10000 delivered)"), "{text}");
        assert!(
            text.contains("CPU per message  client 5.00 µs  broker 3.50 µs"),
            "{text}"
        );
        let json = comparison.json();
        assert_eq!(json["e2e_received"], 9_999);
        let e2e_p50 = json["e2e_p50_us"].as_f64().unwrap();
        assert!((52.9..54.0).contains(&e2e_p50), "{e2e_p50}");
        let late_p99 = json["pacer_lateness_p99_us"].as_f64().unwrap();
        assert!((100.0..102.0).contains(&late_p99), "{late_p99}");
        assert!(json.get("ratio").is_none());
    }
}
