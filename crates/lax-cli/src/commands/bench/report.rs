//! The figures of a benchmark run as text, JSON and a self-contained HTML report.

use std::{fmt::Write as _, time::Duration};

use hdrhistogram::Histogram;
use lax_client::Route;
use serde_json::json;

use super::Workload;

/// The percentiles reported, as (label, quantile).
const PERCENTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

/// One measured run.
#[derive(Debug)]
pub(super) struct Figures {
    label: &'static str,
    concurrency: usize,
    latencies: Histogram<u64>,
    elapsed: Duration,
}

impl Figures {
    pub(super) fn new(
        label: &'static str,
        concurrency: usize,
        latencies: Histogram<u64>,
        elapsed: Duration,
    ) -> Self {
        Figures {
            label,
            concurrency,
            latencies,
            elapsed,
        }
    }

    fn msgs(&self) -> u64 {
        self.latencies.len()
    }

    fn msgs_per_sec(&self) -> f64 {
        self.msgs() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Latency at `quantile`, in microseconds.
    fn quantile_us(&self, quantile: f64) -> f64 {
        self.latencies.value_at_quantile(quantile) as f64 / 1e3
    }

    fn max_us(&self) -> f64 {
        self.latencies.max() as f64 / 1e3
    }
}

/// LAX's figures, and raw async-nats' when compared.
#[derive(Debug)]
pub(super) struct Comparison<'a> {
    pub(super) workload: &'a Workload,
    pub(super) lax: &'a Figures,
    pub(super) raw: Option<&'a Figures>,
}

/// Rounds to 2 decimals for JSON.
fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// `1.23 µs`, `45.6 ms`.
fn latency(us: f64) -> String {
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
        let lax = self.lax;
        let mut figures = json!({
            "route": w.route,
            "tier": w.tier,
            "subject": w.subject,
            "msgs": lax.msgs(),
            "size": w.size,
            "concurrency": w.plan.concurrency,
            "rate": w.plan.rate,
            "elapsed_s": round2(lax.elapsed.as_secs_f64()),
            "msgs_per_sec": round2(lax.msgs_per_sec()),
            "mb_per_sec": round2(lax.msgs_per_sec() * w.size as f64 / 1e6),
            "p50_us": round2(lax.quantile_us(0.5)),
            "p90_us": round2(lax.quantile_us(0.9)),
            "p99_us": round2(lax.quantile_us(0.99)),
            "p999_us": round2(lax.quantile_us(0.999)),
            "max_us": round2(lax.max_us()),
        });
        if let (Some(raw), Some(ratio), Some(object)) =
            (self.raw, self.ratio(), figures.as_object_mut())
        {
            object.extend([
                ("raw_concurrency".to_owned(), json!(raw.concurrency)),
                (
                    "raw_msgs_per_sec".to_owned(),
                    json!(round2(raw.msgs_per_sec())),
                ),
                ("raw_p50_us".to_owned(), json!(round2(raw.quantile_us(0.5)))),
                (
                    "raw_p99_us".to_owned(),
                    json!(round2(raw.quantile_us(0.99))),
                ),
                (
                    "raw_p999_us".to_owned(),
                    json!(round2(raw.quantile_us(0.999))),
                ),
                ("raw_max_us".to_owned(), json!(round2(raw.max_us()))),
                ("ratio".to_owned(), json!((ratio * 1000.0).round() / 1000.0)),
            ]);
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
            match w.plan.rate {
                Some(rate) => format!("paced at {rate} msg/s"),
                None => "unpaced".to_owned(),
            }
        );
        for figures in std::iter::once(self.lax).chain(self.raw) {
            let _ = writeln!(
                text,
                "  {:<4} {:>12.0} msg/s {:>8.1} MB/s  in {:.2} s, {} in flight",
                figures.label,
                figures.msgs_per_sec(),
                figures.msgs_per_sec() * w.size as f64 / 1e6,
                figures.elapsed.as_secs_f64(),
                figures.concurrency
            );
            let mut line = String::from("       latency");
            for (label, quantile) in PERCENTILES {
                let _ = write!(line, "  {label} {}", latency(figures.quantile_us(quantile)));
            }
            let _ = writeln!(text, "{line}  max {}", latency(figures.max_us()));
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
            pace = match w.plan.rate {
                Some(rate) => format!("paced at {rate} msg/s"),
                None => "unpaced".to_owned(),
            },
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
        const COLORS: [&str; 2] = ["#1f6feb", "#d1731f"];

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
            let color = COLORS[index % COLORS.len()];
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

/// A power-of-ten latency as a short axis label: `1 ms`, `100 µs`, `0.1 µs`.
fn tick_label(us: f64) -> String {
    if us >= 1_000.0 {
        format!("{} ms", us / 1e3)
    } else {
        format!("{us} µs")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use lax_client::Tier;

    use super::*;
    use crate::commands::bench::driver::{Plan, latency_histogram};

    fn figures(label: &'static str, base_ns: u64, elapsed: Duration) -> Figures {
        let mut latencies = latency_histogram();
        for i in 0..10_000u64 {
            latencies.record(base_ns + i * 10).unwrap();
        }
        Figures::new(label, 4, latencies, elapsed)
    }

    fn workload() -> Workload {
        Workload {
            route: Route::Broker,
            tier: Tier::Persistent,
            subject: "bench_<x>.broker".into(),
            size: 128,
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
}
