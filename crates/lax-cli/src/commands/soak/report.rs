//! The soak's samples and figures: CSV, SVG plot and the printed summary.

use std::{
    fmt::Write as _,
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use lax_client::Tier;
use lax_testkit::Counts;

use super::{Published, stack::Fault, stack::SoakStack};
use crate::{
    chart::{Scale, line_chart},
    failure::Failure,
};

/// Samples before this are the warm-up, left out of the RSS slopes.
const WARM_UP: Duration = Duration::from_secs(60);

/// One sample of the processes and the load.
#[derive(Debug, Clone)]
pub(super) struct Sample {
    pub(super) at: Duration,
    pub(super) client_rss_kib: u64,
    pub(super) client_tasks: u64,
    /// The broker's pid (it changes when the broker is restarted).
    pub(super) broker_pid: Option<u32>,
    pub(super) broker_rss_kib: Option<u64>,
    /// None while the broker does not answer (frozen, restarting).
    pub(super) broker_tasks: Option<u64>,
    /// Per tier, in [`super::TIERS`] order.
    pub(super) acked: Vec<u64>,
    pub(super) errors: Vec<u64>,
}

/// `VmRSS` of process `pid` in KiB, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Sample {
    pub(super) async fn take(
        started: Instant,
        stack: &SoakStack,
        published: &[Arc<Published>],
    ) -> Sample {
        let broker_pid = stack.broker_pid();
        Sample {
            at: started.elapsed(),
            client_rss_kib: rss_kib(std::process::id()).unwrap_or(0),
            client_tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks() as u64,
            broker_pid,
            broker_rss_kib: broker_pid.and_then(rss_kib),
            broker_tasks: stack.broker_tasks().await,
            acked: published
                .iter()
                .map(|p| p.acked_count.load(Ordering::Relaxed))
                .collect(),
            errors: published
                .iter()
                .map(|p| p.errors.load(Ordering::Relaxed))
                .collect(),
        }
    }

    /// One progress line.
    pub(super) fn line(&self) -> String {
        let or_dash = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        format!(
            "{:>6.0} s  client {:>6.1} MiB {:>4} tasks | broker {:>6} MiB {:>4} tasks | acked {:?} errors {:?}",
            self.at.as_secs_f64(),
            mib(self.client_rss_kib),
            self.client_tasks,
            self.broker_rss_kib
                .map_or_else(|| "-".to_owned(), |kib| format!("{:.1}", mib(kib))),
            or_dash(self.broker_tasks),
            self.acked,
            self.errors,
        )
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One tier's outcome.
#[derive(Debug)]
pub(super) struct TierFigures {
    pub(super) tier: Tier,
    pub(super) counts: Counts,
    /// Publishes that failed and were sent again.
    pub(super) errors: u64,
}

/// The whole run.
#[derive(Debug)]
pub(super) struct Summary {
    pub(super) minutes: u64,
    pub(super) rate: u32,
    pub(super) tiers: Vec<TierFigures>,
    pub(super) group_received: usize,
    /// Persistent ids acked to the publisher that the group never acked.
    pub(super) group_missing: usize,
    pub(super) group_deliveries: u64,
    pub(super) group_redelivered: u64,
    pub(super) group_resubscribes: u64,
    pub(super) faults: Vec<(Duration, Fault)>,
    pub(super) samples: Vec<Sample>,
}

/// Least-squares slope of `(seconds, MiB)` points, in MiB per hour; `None` for fewer than
/// two distinct times.
pub(super) fn slope_mib_per_hour(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    Some(sxy / sxx * 3600.0)
}

/// Start, peak and end of a series.
fn start_peak_end(values: &[f64]) -> String {
    match (values.first(), values.last()) {
        (Some(first), Some(last)) => format!(
            "start {first:.1}, peak {:.1}, end {last:.1}",
            values.iter().copied().fold(f64::MIN, f64::max)
        ),
        _ => "no samples".to_owned(),
    }
}

impl Summary {
    /// The broker's samples split by process (a restart starts a new life).
    fn broker_lives(&self) -> Vec<Vec<&Sample>> {
        let mut lives: Vec<Vec<&Sample>> = Vec::new();
        let mut pid = None;
        for sample in self.samples.iter().filter(|s| s.broker_rss_kib.is_some()) {
            if sample.broker_pid != pid || lives.is_empty() {
                lives.push(Vec::new());
                pid = sample.broker_pid;
            }
            lives.last_mut().expect("pushed above").push(sample);
        }
        lives
    }

    pub(super) fn text(&self) -> String {
        let mut text = format!(
            "soak: {} min, {} msg/s per tier, {} faults ({})\n",
            self.minutes,
            self.rate,
            self.faults.len(),
            Fault::ROTATION.map(|f| f.to_string()).join(", then ")
        );
        for tier in &self.tiers {
            let _ = writeln!(
                text,
                "  {:<10} {} (publish errors, each resent with its id: {})",
                tier.tier.to_string(),
                tier.counts,
                tier.errors
            );
        }
        let _ = writeln!(
            text,
            "  group      received {} of the persistent ids, missing {}; {} deliveries, {} redelivered; {} resubscriptions",
            self.group_received,
            self.group_missing,
            self.group_deliveries,
            self.group_redelivered,
            self.group_resubscribes
        );
        let client: Vec<f64> = self.samples.iter().map(|s| mib(s.client_rss_kib)).collect();
        let steady: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.at >= WARM_UP)
            .map(|s| (s.at.as_secs_f64(), mib(s.client_rss_kib)))
            .collect();
        let _ = writeln!(
            text,
            "  client RSS MiB: {}; slope after the first minute {} MiB/h",
            start_peak_end(&client),
            slope_mib_per_hour(&steady).map_or_else(|| "-".to_owned(), |s| format!("{s:+.1}"))
        );
        let broker: Vec<f64> = self
            .samples
            .iter()
            .filter_map(|s| s.broker_rss_kib.map(mib))
            .collect();
        let lives: Vec<String> = self
            .broker_lives()
            .iter()
            .map(|life| {
                let points: Vec<(f64, f64)> = life
                    .iter()
                    .filter(|s| s.at >= WARM_UP)
                    .map(|s| (s.at.as_secs_f64(), s.broker_rss_kib.map_or(0.0, mib)))
                    .collect();
                slope_mib_per_hour(&points).map_or_else(|| "-".to_owned(), |s| format!("{s:+.1}"))
            })
            .collect();
        let _ = writeln!(
            text,
            "  broker RSS MiB: {}; slope per broker process (restarted by the kills) {} MiB/h",
            start_peak_end(&broker),
            lives.join(", ")
        );
        let tasks = |values: Vec<f64>| start_peak_end(&values).replace(".0", "");
        let _ = writeln!(
            text,
            "  alive tasks: client {}; broker {}",
            tasks(self.samples.iter().map(|s| s.client_tasks as f64).collect()),
            tasks(
                self.samples
                    .iter()
                    .filter_map(|s| s.broker_tasks.map(|t| t as f64))
                    .collect()
            )
        );
        text
    }

    fn csv(&self) -> String {
        let mut csv = String::from(
            "seconds,client_rss_kib,client_tasks,broker_pid,broker_rss_kib,broker_tasks,\
             memory_acked,persistent_acked,replicated_acked,memory_errors,persistent_errors,\
             replicated_errors,fault\n",
        );
        let mut faults = self.faults.iter().peekable();
        let mut previous = Duration::ZERO;
        for sample in &self.samples {
            let mut fault = String::new();
            while let Some((at, kind)) = faults.peek() {
                if *at > sample.at {
                    break;
                }
                if *at >= previous {
                    fault = kind.to_string();
                }
                faults.next();
            }
            previous = sample.at;
            let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
            let _ = writeln!(
                csv,
                "{:.1},{},{},{},{},{},{},{},{}",
                sample.at.as_secs_f64(),
                sample.client_rss_kib,
                sample.client_tasks,
                sample.broker_pid.map(|p| p.to_string()).unwrap_or_default(),
                opt(sample.broker_rss_kib),
                opt(sample.broker_tasks),
                join(&sample.acked),
                join(&sample.errors),
                fault
            );
        }
        csv
    }

    /// RSS and alive tasks over time, client and broker, one chart above the other. A
    /// missing broker figure (frozen, restarting) repeats the last one.
    fn svg(&self) -> String {
        let x: Vec<String> = self
            .samples
            .iter()
            .map(|s| format!("{:.0}:{:02.0}", s.at.as_secs() / 60, s.at.as_secs() % 60))
            .collect();
        let carried = |values: Vec<Option<u64>>| -> Vec<f64> {
            let mut last = 0.0;
            values
                .into_iter()
                .map(|v| {
                    if let Some(v) = v {
                        last = v as f64;
                    }
                    last
                })
                .collect()
        };
        let broker_rss = carried(self.samples.iter().map(|s| s.broker_rss_kib).collect());
        let rss = line_chart(
            "RSS (MiB)",
            "minutes",
            &x,
            &[
                (
                    "client",
                    self.samples.iter().map(|s| mib(s.client_rss_kib)).collect(),
                ),
                (
                    "broker",
                    broker_rss.iter().map(|kib| kib / 1024.0).collect(),
                ),
            ],
            Scale::Linear,
        );
        let tasks = line_chart(
            "alive tokio tasks",
            "minutes",
            &x,
            &[
                (
                    "client",
                    self.samples.iter().map(|s| s.client_tasks as f64).collect(),
                ),
                (
                    "broker",
                    carried(self.samples.iter().map(|s| s.broker_tasks).collect()),
                ),
            ],
            Scale::Linear,
        );
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"460\" height=\"600\">\n\
             <svg y=\"0\">{rss}</svg>\n<svg y=\"300\">{tasks}</svg>\n</svg>\n"
        )
    }

    /// Writes `soak.csv`, `soak.svg` and `soak.txt` (the summary) into `out`.
    pub(super) fn write(&self, out: &Path) -> Result<(), Failure> {
        for (name, content) in [
            ("soak.csv", self.csv()),
            ("soak.svg", self.svg()),
            ("soak.txt", self.text()),
        ] {
            let path = out.join(name);
            std::fs::write(&path, content)
                .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))?;
        }
        println!("wrote soak.csv, soak.svg and soak.txt to {}", out.display());
        Ok(())
    }
}

fn join(values: &[u64]) -> String {
    values
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: u64, client_kib: u64, pid: u32, broker_kib: u64) -> Sample {
        Sample {
            at: Duration::from_secs(at),
            client_rss_kib: client_kib,
            client_tasks: 10,
            broker_pid: Some(pid),
            broker_rss_kib: Some(broker_kib),
            broker_tasks: (pid != 2).then_some(20),
            acked: vec![at, at, at],
            errors: vec![0, 1, 2],
        }
    }

    #[test]
    fn slopes_are_in_mib_per_hour() {
        assert_eq!(
            slope_mib_per_hour(&[(0.0, 10.0), (3600.0, 12.0)]),
            Some(2.0)
        );
        assert_eq!(slope_mib_per_hour(&[(0.0, 10.0)]), None);
        let flat: Vec<(f64, f64)> = (0..10).map(|i| (f64::from(i), 5.0)).collect();
        assert_eq!(slope_mib_per_hour(&flat), Some(0.0));
    }

    #[test]
    fn the_report_splits_broker_lives_and_marks_faults() {
        let summary = Summary {
            minutes: 3,
            rate: 10,
            tiers: vec![TierFigures {
                tier: Tier::Persistent,
                counts: Counts {
                    acked: 5,
                    stored: 5,
                    lost: 0,
                    duplicated: 0,
                },
                errors: 1,
            }],
            group_received: 5,
            group_missing: 0,
            group_deliveries: 6,
            group_redelivered: 1,
            group_resubscribes: 1,
            faults: vec![(Duration::from_secs(65), Fault::BrokerKill)],
            samples: vec![
                sample(60, 10_240, 1, 20_480),
                sample(70, 10_240, 2, 10_240),
                sample(120, 10_240, 2, 10_240),
                sample(180, 10_240, 2, 10_240),
            ],
        };
        assert_eq!(summary.broker_lives().len(), 2);
        let text = summary.text();
        assert!(
            text.contains("acked 5 stored 5 lost 0 duplicated 0"),
            "{text}"
        );
        assert!(
            text.contains("client RSS MiB: start 10.0, peak 10.0, end 10.0"),
            "{text}"
        );
        assert!(
            text.contains("slope after the first minute +0.0 MiB/h"),
            "{text}"
        );
        let csv = summary.csv();
        assert_eq!(csv.lines().count(), 5);
        assert!(
            csv.lines()
                .nth(2)
                .unwrap()
                .ends_with("broker SIGKILL + restart"),
            "{csv}"
        );
        let svg = summary.svg();
        assert!(svg.contains("RSS (MiB)") && svg.contains("alive tokio tasks"));
    }
}
