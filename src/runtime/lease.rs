//! Leader election on a `coordination.k8s.io/v1` Lease, modelled on kubert's `lease.rs` and
//! client-go's `leaderelection`.
//!
//! Rules:
//! - Every write is a `replace` carrying the `resourceVersion` that was read, so two
//!   candidates can never both win: the loser gets 409 Conflict.
//! - Expiry is judged on the local monotonic clock, never by comparing clocks across
//!   machines: a Lease held by someone else is free once its record (holder, renew time) has
//!   not changed for its `leaseDurationSeconds` since this process first saw it. A vacant Lease
//!   (no holder, e.g. released on shutdown) is free at once; a Lease held by this identity (a
//!   restarted container of the same pod) is renewed at once.
//! - The leader renews every `renew_interval`. It leads only while its last successful renewal
//!   is younger than `duration - renew_interval` (the renew deadline), measured from the moment
//!   the renewing request was *sent*; a standby can take over no earlier than `duration` after
//!   it *saw* that renewal. So the old leader stops at least `renew_interval` before anyone else
//!   can start, even when the API server is unreachable.
//! - The leader also stops as soon as it reads the Lease held by another identity.
//! - On shutdown the leader releases the Lease (clears the holder), so a standby takes over at
//!   its next check instead of waiting out the duration.
//!
//! The state is published on a [`watch`] channel as [`Leadership`].

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{PostParams, Resource as _},
};
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::controllers::FIELD_MANAGER;

/// Which Lease, who we are, and the timings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Unique per replica (the pod name).
    pub identity: String,
    /// `leaseDurationSeconds` written to the Lease (whole seconds, at least 1).
    pub duration: Duration,
    /// Time between renewals by the leader and between checks by a standby; less than
    /// `duration`.
    pub renew_interval: Duration,
}

impl LeaseConfig {
    /// How long the leader keeps leading after the start of its last successful renewal.
    pub fn renew_deadline(&self) -> Duration {
        self.duration
            .saturating_sub(self.renew_interval)
            .max(Duration::from_millis(100))
    }

    fn retry_interval(&self) -> Duration {
        (self.renew_interval / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    fn request_timeout(&self) -> Duration {
        self.renew_interval
            .clamp(Duration::from_secs(1), Duration::from_secs(10))
    }
}

/// What this replica knows about the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// True while this replica holds the Lease (within its renew deadline).
    pub leading: bool,
    /// The holder last read from the Lease (`None`: vacant or never read).
    pub holder: Option<String>,
    /// When the Lease API last answered (success or a conflict), for readiness.
    pub last_contact: Option<Instant>,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("lease API request timed out")]
    Timeout,
}

/// What to do with the Lease as last read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Vacant, or held by someone whose record has not changed for the lease duration.
    Acquire,
    /// Held by us.
    Renew,
    /// Held by someone else and still current.
    Wait { holder: String },
}

/// The parts of a Lease that show the holder is alive; a change restarts the expiry clock.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    duration_seconds: Option<i32>,
}

impl Record {
    fn of(spec: Option<&LeaseSpec>) -> Record {
        Record {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            renew_time: spec.and_then(|s| s.renew_time.clone()),
            duration_seconds: spec.and_then(|s| s.lease_duration_seconds),
        }
    }
}

/// Pure decision: `seen_at` is when this process first saw the current record.
pub fn decide(
    holder: Option<&str>,
    lease_duration_seconds: Option<i32>,
    identity: &str,
    seen_at: Instant,
    now: Instant,
    default_duration: Duration,
) -> Decision {
    match holder.filter(|h| !h.is_empty()) {
        None => Decision::Acquire,
        Some(h) if h == identity => Decision::Renew,
        Some(h) => {
            let duration = match lease_duration_seconds {
                Some(s) if s > 0 => Duration::from_secs(s as u64),
                _ => default_duration,
            };
            if now.saturating_duration_since(seen_at) >= duration {
                Decision::Acquire
            } else {
                Decision::Wait {
                    holder: h.to_string(),
                }
            }
        }
    }
}

/// The spec this identity writes to acquire or renew `current`.
fn claimed_spec(current: Option<&LeaseSpec>, config: &LeaseConfig, now: Timestamp) -> LeaseSpec {
    let current = current.cloned().unwrap_or_default();
    let ours = current.holder_identity.as_deref() == Some(config.identity.as_str());
    let transitions = current.lease_transitions.unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(config.duration.as_secs().clamp(1, i32::MAX as u64) as i32),
        acquire_time: if ours {
            current.acquire_time.clone()
        } else {
            None
        }
        .or(Some(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours {
            transitions
        } else {
            transitions.saturating_add(1)
        }),
        ..current
    }
}

/// Outcome of one acquire-or-renew round.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Round {
    Leading,
    Standby { holder: Option<String> },
}

/// Runs the election for one identity.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// Last record read and when it was first seen.
    observed: Option<(Record, Instant)>,
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Elector {
        let api = Api::namespaced(client, &config.namespace);
        Elector {
            api,
            config,
            observed: None,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    fn observe(&mut self, record: Record) {
        match &self.observed {
            Some((seen, _)) if *seen == record => {}
            _ => self.observed = Some((record, Instant::now())),
        }
    }

    /// Reads the Lease and acquires or renews it when allowed (client-go's
    /// `tryAcquireOrRenew`).
    async fn round(&mut self) -> Result<Round, LeaseError> {
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..Default::default()
                },
                spec: Some(claimed_spec(None, &self.config, Timestamp::now())),
            };
            return match self.api.create(&pp, &lease).await {
                Ok(created) => {
                    self.observe(Record::of(created.spec.as_ref()));
                    Ok(Round::Leading)
                }
                Err(kube::Error::Api(status))
                    if status.is_already_exists() || status.is_conflict() =>
                {
                    Ok(Round::Standby { holder: None })
                }
                Err(err) => Err(err.into()),
            };
        };
        let record = Record::of(lease.spec.as_ref());
        self.observe(record.clone());
        let seen_at = self
            .observed
            .as_ref()
            .map(|(_, at)| *at)
            .unwrap_or_else(Instant::now);
        match decide(
            record.holder.as_deref(),
            record.duration_seconds,
            &self.config.identity,
            seen_at,
            Instant::now(),
            self.config.duration,
        ) {
            Decision::Wait { holder } => Ok(Round::Standby {
                holder: Some(holder),
            }),
            decision => {
                if decision == Decision::Acquire {
                    tracing::info!(lease = %self.config.name, previous = ?record.holder, "acquiring the leader lease");
                }
                lease.spec = Some(claimed_spec(
                    lease.spec.as_ref(),
                    &self.config,
                    Timestamp::now(),
                ));
                lease.meta_mut().managed_fields = None;
                match self.api.replace(&self.config.name, &pp, &lease).await {
                    Ok(updated) => {
                        self.observe(Record::of(updated.spec.as_ref()));
                        Ok(Round::Leading)
                    }
                    // Someone else wrote first: read again next round.
                    Err(kube::Error::Api(status)) if status.is_conflict() => {
                        Ok(Round::Standby { holder: None })
                    }
                    Err(err) => Err(err.into()),
                }
            }
        }
    }

    /// Clears the holder if it is still us (shutdown), so a standby takes over at once.
    pub async fn release(&mut self) -> Result<bool, LeaseError> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(false);
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        spec.lease_duration_seconds = None;
        lease.meta_mut().managed_fields = None;
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        self.api.replace(&self.config.name, &pp, &lease).await?;
        Ok(true)
    }

    /// Runs the election until `stop` is cancelled, then releases the Lease if held. The
    /// receiver sees every change of [`Leadership`].
    pub fn spawn(self, stop: CancellationToken) -> (watch::Receiver<Leadership>, JoinHandle<()>) {
        let (tx, rx) = watch::channel(Leadership {
            leading: false,
            holder: None,
            last_contact: None,
        });
        let task = tokio::spawn(self.run(tx, stop));
        (rx, task)
    }

    async fn run(mut self, tx: watch::Sender<Leadership>, stop: CancellationToken) {
        let config = self.config.clone();
        // While leading: the instant leadership ends unless renewed.
        let mut deadline: Option<Instant> = None;
        loop {
            let started = Instant::now();
            let mut limit = config.request_timeout();
            if let Some(d) = deadline {
                limit = limit
                    .min(d.saturating_duration_since(started))
                    .max(Duration::from_millis(1));
            }
            let result = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                result = tokio::time::timeout(limit, self.round()) => result.unwrap_or(Err(LeaseError::Timeout)),
            };
            let wait = match result {
                Ok(Round::Leading) => {
                    if deadline.is_none() {
                        tracing::info!(lease = %config.name, identity = %config.identity, "became the leader");
                    }
                    deadline = Some(started + config.renew_deadline());
                    tx.send_modify(|l| {
                        l.leading = true;
                        l.holder = Some(config.identity.clone());
                        l.last_contact = Some(Instant::now());
                    });
                    config.renew_interval
                }
                Ok(Round::Standby { holder }) => {
                    if deadline.take().is_some() {
                        tracing::warn!(lease = %config.name, holder = ?holder, "lost the leader lease to another replica");
                    }
                    tx.send_if_modified(|l| {
                        let changed = l.leading || l.holder != holder;
                        l.leading = false;
                        l.holder = holder;
                        l.last_contact = Some(Instant::now());
                        changed
                    });
                    // A lost race (no holder known) is re-read soon; a live holder at the interval.
                    if tx.borrow().holder.is_none() {
                        config.retry_interval()
                    } else {
                        config.renew_interval
                    }
                }
                Err(err) => {
                    tracing::warn!(lease = %config.name, error = %err, "leader lease request failed");
                    config.retry_interval()
                }
            };
            let next = Instant::now() + wait;
            // A leader whose renewals keep failing steps down at its deadline.
            let step_down = deadline.filter(|d| *d <= next);
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(step_down.unwrap_or(next)) => {}
            }
            if let Some(d) = deadline
                && Instant::now() >= d
            {
                deadline = None;
                tracing::warn!(lease = %config.name, "could not renew the leader lease in time: stepping down");
                tx.send_modify(|l| l.leading = false);
            }
        }
        // Stopped: release the Lease if we hold it.
        if deadline.is_some() {
            tx.send_modify(|l| l.leading = false);
            match tokio::time::timeout(config.request_timeout(), self.release())
                .await
                .unwrap_or(Err(LeaseError::Timeout))
            {
                Ok(true) => tracing::info!(lease = %config.name, "released the leader lease"),
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(lease = %config.name, error = %err, "could not release the leader lease")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn vacant_lease_is_acquired_at_once() {
        let now = Instant::now();
        assert_eq!(decide(None, None, "me", now, now, D), Decision::Acquire);
        assert_eq!(
            decide(Some(""), Some(15), "me", now, now, D),
            Decision::Acquire
        );
    }

    #[test]
    fn own_lease_is_renewed() {
        let now = Instant::now();
        assert_eq!(
            decide(Some("me"), Some(15), "me", now, now, D),
            Decision::Renew
        );
    }

    #[test]
    fn foreign_lease_expires_on_the_local_clock_with_its_own_duration() {
        let seen = Instant::now();
        let wait = Decision::Wait {
            holder: "other".into(),
        };
        assert_eq!(
            decide(
                Some("other"),
                Some(4),
                "me",
                seen,
                seen + Duration::from_secs(3),
                D
            ),
            wait
        );
        assert_eq!(
            decide(
                Some("other"),
                Some(4),
                "me",
                seen,
                seen + Duration::from_secs(4),
                D
            ),
            Decision::Acquire
        );
        // No duration in the record: ours applies.
        assert_eq!(
            decide(
                Some("other"),
                None,
                "me",
                seen,
                seen + Duration::from_secs(14),
                D
            ),
            wait
        );
        assert_eq!(
            decide(Some("other"), Some(0), "me", seen, seen + D, D),
            Decision::Acquire
        );
    }

    #[test]
    fn claimed_spec_counts_transitions_only_on_a_change_of_holder() {
        let config = LeaseConfig {
            name: "l".into(),
            namespace: "ns".into(),
            identity: "me".into(),
            duration: Duration::from_secs(4),
            renew_interval: Duration::from_secs(1),
        };
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let t1 = Timestamp::from_second(1_800_000_005).unwrap();
        let first = claimed_spec(None, &config, t0);
        assert_eq!(first.holder_identity.as_deref(), Some("me"));
        assert_eq!(first.lease_duration_seconds, Some(4));
        assert_eq!(first.lease_transitions, Some(1));
        let renewed = claimed_spec(Some(&first), &config, t1);
        assert_eq!(renewed.lease_transitions, Some(1));
        assert_eq!(renewed.acquire_time, Some(MicroTime(t0)));
        assert_eq!(renewed.renew_time, Some(MicroTime(t1)));
        let other = LeaseSpec {
            holder_identity: Some("other".into()),
            lease_transitions: Some(7),
            ..first
        };
        let taken = claimed_spec(Some(&other), &config, t1);
        assert_eq!(taken.lease_transitions, Some(8));
        assert_eq!(taken.acquire_time, Some(MicroTime(t1)));
    }

    #[test]
    fn leader_stops_before_a_standby_may_start() {
        let config = LeaseConfig {
            name: "l".into(),
            namespace: "ns".into(),
            identity: "me".into(),
            duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
        };
        assert_eq!(config.renew_deadline(), Duration::from_secs(10));
        assert!(config.renew_deadline() < config.duration);
    }
}
