//! A run's time series, for the plots: once a second the operator's RSS and the simulator's
//! call counter ([`Sampler`]); afterwards the operator's Kubernetes writes per second from
//! the audit log ([`per_second`]); and where each phase began. Offsets are seconds from the
//! run's start (`Report::started_at`).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::observe::TokenWrite;
use crate::sim::Sim;

/// One sample of the run.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Seconds from the run's start.
    pub at: f64,
    /// The operator's resident memory (MiB); `None` while no operator process runs.
    pub rss_mib: Option<f64>,
    /// Which operator process that is: 1 for the first the run started, 2 for the next...
    #[serde(default)]
    pub operator: u32,
    /// Gebeta calls the simulator had received by then (every endpoint; cumulative).
    pub gebeta_calls: u64,
}

/// Where a phase began.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PhaseMark {
    pub name: String,
    /// Seconds from the run's start.
    pub at: f64,
}

/// The run's time series. Empty in reports made before plots existed.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// About one a second, from the simulator's start to the end of the run.
    pub samples: Vec<Sample>,
    /// The operator's Kubernetes writes (audit log, by the time the API server received
    /// each): element `i` counts those of second `i` from the run's start.
    pub kube_writes_per_second: Vec<u64>,
    pub phases: Vec<PhaseMark>,
}

impl Timeline {
    /// No time series (a report made before they were recorded).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty() && self.kube_writes_per_second.is_empty()
    }

    /// Gebeta calls per second between consecutive samples, at the later sample's time.
    pub fn gebeta_calls_per_second(&self) -> Vec<(f64, f64)> {
        self.samples
            .windows(2)
            .filter(|w| w[1].at > w[0].at)
            .map(|w| {
                let calls = w[1].gebeta_calls.saturating_sub(w[0].gebeta_calls);
                (w[1].at, calls as f64 / (w[1].at - w[0].at))
            })
            .collect()
    }

    /// `(seconds, MiB)` of every sample taken while an operator ran.
    pub fn rss_mib(&self) -> Vec<(f64, f64)> {
        self.samples
            .iter()
            .filter_map(|s| Some((s.at, s.rss_mib?)))
            .collect()
    }
}

/// Seconds from `origin` to `t` (negative before it), to the millisecond.
pub fn offset(t: Timestamp, origin: Timestamp) -> f64 {
    (t.as_millisecond() - origin.as_millisecond()) as f64 / 1000.0
}

/// Counts events per whole second from `origin`; events before `origin` are left out.
pub fn per_second(times: impl IntoIterator<Item = Timestamp>, origin: Timestamp) -> Vec<u64> {
    let mut counts: Vec<u64> = Vec::new();
    for t in times {
        let at = offset(t, origin);
        if at < 0.0 {
            continue;
        }
        let second = at as usize;
        if counts.len() <= second {
            counts.resize(second + 1, 0);
        }
        counts[second] += 1;
    }
    counts
}

/// `[seen at, margin]` of each replacement among `writes` (first tokens have no margin):
/// seconds from `origin`, seconds left on the old token (to the millisecond).
pub fn margin_points<'a>(
    writes: impl IntoIterator<Item = &'a TokenWrite>,
    origin: Timestamp,
) -> Vec<[f64; 2]> {
    writes
        .into_iter()
        .filter_map(|w| {
            let margin = (w.margin_seconds()? * 1000.0).round() / 1000.0;
            Some([offset(w.at, origin), margin])
        })
        .collect()
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/<pid>/status`; Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[derive(Default)]
struct SamplerState {
    pid: Option<u32>,
    /// Operator processes followed so far.
    operators: u32,
    samples: Vec<Sample>,
}

fn lock(state: &Mutex<SamplerState>) -> std::sync::MutexGuard<'_, SamplerState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Samples the operator's RSS and the simulator's call counter once a second, until
/// [`Sampler::finish`].
pub struct Sampler {
    state: Arc<Mutex<SamplerState>>,
    task: JoinHandle<()>,
}

impl Sampler {
    pub fn start(sim: Sim, origin: Timestamp) -> Sampler {
        let state: Arc<Mutex<SamplerState>> = Arc::default();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let gebeta_calls = sim.stats().calls.values().map(|e| e.total).sum();
                let (pid, operator) = {
                    let state = lock(&shared);
                    (state.pid, state.operators)
                };
                let rss_mib = pid
                    .and_then(rss_kib)
                    .map(|k| (k as f64 / 1024.0 * 10.0).round() / 10.0);
                lock(&shared).samples.push(Sample {
                    at: offset(Timestamp::now(), origin),
                    rss_mib,
                    operator,
                    gebeta_calls,
                });
            }
        });
        Sampler { state, task }
    }

    /// The operator process to sample from now on (`None`: none runs).
    pub fn follow(&self, pid: Option<u32>) {
        let mut state = lock(&self.state);
        if pid.is_some() && pid != state.pid {
            state.operators += 1;
        }
        state.pid = pid;
    }

    /// Stops sampling; every sample taken.
    pub fn finish(self) -> Vec<Sample> {
        self.task.abort();
        std::mem::take(&mut lock(&self.state).samples)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_counted_per_second_from_the_origin() {
        let origin: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |ms: i64| Timestamp::from_millisecond(origin.as_millisecond() + ms).unwrap();
        let counts = per_second([at(-10), at(0), at(999), at(1000), at(3500)], origin);
        assert_eq!(counts, vec![2, 1, 0, 1]);
        assert!(per_second([at(-1)], origin).is_empty());
    }

    #[test]
    fn margins_are_placed_on_the_run_clock() {
        let origin: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let write = |at_ms: i64, old_exp: Option<i64>| TokenWrite {
            namespace: "ns".into(),
            name: "t".into(),
            at: Timestamp::from_millisecond(origin.as_millisecond() + at_ms).unwrap(),
            exp: None,
            iat: None,
            old_exp: old_exp.map(|s| origin.as_second() + s),
            old_iat: None,
        };
        let writes = [
            write(2500, None),
            write(10_250, Some(15)),
            write(20_000, Some(19)),
        ];
        assert_eq!(
            margin_points(&writes, origin),
            vec![[10.25, 4.75], [20.0, -1.0]]
        );
    }

    #[test]
    fn call_rates_and_rss_come_from_the_samples() {
        let sample = |at: f64, rss_mib: Option<f64>, gebeta_calls: u64| Sample {
            at,
            rss_mib,
            operator: 1,
            gebeta_calls,
        };
        let timeline = Timeline {
            samples: vec![
                sample(1.0, None, 0),
                sample(2.0, Some(10.0), 4),
                sample(4.0, Some(12.5), 10),
            ],
            ..Timeline::default()
        };
        assert_eq!(
            timeline.gebeta_calls_per_second(),
            vec![(2.0, 4.0), (4.0, 3.0)]
        );
        assert_eq!(timeline.rss_mib(), vec![(2.0, 10.0), (4.0, 12.5)]);
        assert!(!timeline.is_empty());
        assert!(Timeline::default().is_empty());
    }
}
