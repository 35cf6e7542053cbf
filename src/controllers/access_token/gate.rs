//! Earliest-deadline-first admission of the work that costs: Gebeta calls and Kubernetes
//! writes.
//!
//! kube-runtime runs reconciles in an order that ignores urgency: when every reconcile slot
//! is busy, ready requests wait in a set served in hash order, and requests whose time has
//! passed leave the scheduler newest first. Under overload that starves some tokens while
//! others are refreshed twice. So the access-token controller runs its reconciles without a
//! concurrency limit (they only read caches until they have something to do), and each one
//! that needs to call or write first takes a permit here, stating the deadline of its work
//! (the expiry of the token it holds). Permits go to the earliest deadline first, ties in
//! arrival order, and at most `capacity` are out at once (`--max-concurrent-reconciles`).
//!
//! Under sustained overload, earliest deadline first collapses: the most urgent waiters are
//! tokens that already expired while waiting, so every permit goes to a lost cause and the
//! tokens still valid expire in turn (measured: at 2.4 times capacity 54 of 59 refreshes came
//! after expiry). So a waiter whose deadline has passed goes behind every waiter that can
//! still be served in time, except that at least one grant in [`RECOVERY_EVERY`] goes to the
//! longest-expired waiter while any waits: the valid tokens stay valid, and no expired one
//! waits for ever. Without overload no deadline passes while waiting, and the order is plain
//! earliest deadline first.
//!
//! A waiter that is dropped (shutdown, a cancelled reconcile) gives up its place, and a permit
//! granted to it just before is handed on.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use jiff::Timestamp;
use tokio::sync::oneshot;

/// While both expired and still-valid work waits, one grant in this many goes to the work
/// whose deadline passed longest ago.
pub const RECOVERY_EVERY: u32 = 4;

/// Bounds the work in flight and hands it out earliest deadline first.
pub struct DeadlineGate {
    inner: Mutex<Inner>,
}

struct Inner {
    free: usize,
    next_seq: u64,
    /// By deadline, then arrival.
    waiting: BTreeMap<(Timestamp, u64), Waiter>,
    /// Grants to work still in time since the last grant to expired work.
    since_recovery: u32,
}

struct Waiter {
    since: Instant,
    grant: oneshot::Sender<()>,
}

impl Inner {
    /// The next waiter to serve at `now` (see the module docs), taken out.
    fn next(&mut self, now: Timestamp) -> Option<Waiter> {
        let in_time = self
            .waiting
            .range((now, u64::MAX)..)
            .next()
            .map(|(k, _)| *k);
        let expired = self
            .waiting
            .first_key_value()
            .map(|(k, _)| *k)
            .filter(|k| k.0 <= now);
        let key = match (in_time, expired) {
            (Some(_), Some(e)) if self.since_recovery + 1 >= RECOVERY_EVERY => e,
            (Some(t), _) => t,
            (None, Some(e)) => e,
            (None, None) => return None,
        };
        if Some(key) == expired {
            self.since_recovery = 0;
        } else if expired.is_some() {
            self.since_recovery += 1;
        }
        self.waiting.remove(&key)
    }
}

/// Work waiting for a permit: how many, and how long the oldest has waited.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Backlog {
    pub waiting: usize,
    pub oldest_wait_seconds: f64,
}

/// The right to do costly work; handed to the next waiter when dropped.
pub struct Permit {
    gate: Arc<DeadlineGate>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.release();
    }
}

impl DeadlineGate {
    /// A gate letting `capacity` (at least one) holders work at once.
    pub fn new(capacity: usize) -> Arc<DeadlineGate> {
        Arc::new(DeadlineGate {
            inner: Mutex::new(Inner {
                free: capacity.max(1),
                next_seq: 0,
                waiting: BTreeMap::new(),
                since_recovery: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a permit for work that must be done by `deadline`.
    pub async fn acquire(self: &Arc<Self>, deadline: Timestamp) -> Permit {
        let receiver = {
            let mut inner = self.lock();
            if inner.free > 0 && inner.waiting.is_empty() {
                inner.free -= 1;
                return Permit { gate: self.clone() };
            }
            let (grant, receiver) = oneshot::channel();
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner.waiting.insert(
                (deadline, seq),
                Waiter {
                    since: Instant::now(),
                    grant,
                },
            );
            receiver
        };
        let mut waiting = Waiting {
            gate: self.clone(),
            receiver,
        };
        // The sender is only dropped after a send (release keeps it until then). The grant
        // is taken here, so dropping `waiting` afterwards hands nothing on.
        let _ = (&mut waiting.receiver).await;
        Permit { gate: self.clone() }
    }

    /// Hands a returned permit to the most urgent live waiter, or frees it.
    fn release(&self) {
        loop {
            let next = {
                let mut inner = self.lock();
                match inner.next(Timestamp::now()) {
                    Some(w) => w,
                    None => {
                        inner.free += 1;
                        return;
                    }
                }
            };
            if next.grant.send(()).is_ok() {
                return;
            }
            // That waiter is gone: try the next one.
        }
    }

    /// What waits now.
    pub fn backlog(&self) -> Backlog {
        let inner = self.lock();
        let oldest = inner.waiting.values().map(|w| w.since).min();
        Backlog {
            waiting: inner.waiting.len(),
            oldest_wait_seconds: oldest.map_or(0.0, |t| t.elapsed().as_secs_f64()),
        }
    }
}

/// A waiter's end of the grant; if dropped after the grant was sent but before it was taken,
/// the permit is handed on.
struct Waiting {
    gate: Arc<DeadlineGate>,
    receiver: oneshot::Receiver<()>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.receiver.close();
        if self.receiver.try_recv().is_ok() {
            self.gate.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    /// Starts a waiter for `deadline` that records its name when served and returns the
    /// permit at once.
    fn waiter(
        gate: &Arc<DeadlineGate>,
        deadline: i64,
        name: &'static str,
        served: &Arc<Mutex<Vec<&'static str>>>,
    ) -> tokio::task::JoinHandle<()> {
        let (gate, served) = (gate.clone(), served.clone());
        tokio::spawn(async move {
            let _permit = gate.acquire(at(deadline)).await;
            served.lock().unwrap().push(name);
        })
    }

    async fn until_waiting(gate: &DeadlineGate, n: usize) {
        for _ in 0..1000 {
            if gate.backlog().waiting == n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("expected {n} waiters, have {}", gate.backlog().waiting);
    }

    #[tokio::test]
    async fn serves_the_earliest_deadline_first_not_the_first_to_ask() {
        let gate = DeadlineGate::new(1);
        let served = Arc::new(Mutex::new(Vec::new()));
        let held = gate.acquire(at(0)).await;
        let mut tasks = Vec::new();
        for (i, (deadline, name)) in [(50, "late"), (10, "soon"), (30, "mid"), (10, "soon-2")]
            .into_iter()
            .enumerate()
        {
            tasks.push(waiter(&gate, deadline, name, &served));
            until_waiting(&gate, i + 1).await;
        }
        assert_eq!(gate.backlog().waiting, 4);
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            *served.lock().unwrap(),
            ["soon", "soon-2", "mid", "late"],
            "deadline order, ties in arrival order"
        );
        assert_eq!(gate.backlog(), Backlog::default());
    }

    /// Demand above capacity: when the time for serving runs out, the requests left waiting
    /// (the tokens that expire) are exactly those due last, whatever the arrival order.
    #[tokio::test]
    async fn under_overload_the_latest_due_are_the_ones_left_waiting() {
        const CAPACITY: usize = 2;
        const SERVED_IN_TIME: usize = 6;
        let gate = DeadlineGate::new(CAPACITY);
        let served = Arc::new(Mutex::new(Vec::new()));
        let held: Vec<Permit> =
            futures::future::join_all((0..CAPACITY).map(|_| gate.acquire(at(0)))).await;
        // Ten requests, deadlines 10..100, arriving in a scrambled order.
        let deadlines = [70, 20, 100, 40, 10, 90, 30, 60, 80, 50];
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for (i, deadline) in deadlines.into_iter().enumerate() {
            let (g, served, done_tx) = (gate.clone(), served.clone(), done_tx.clone());
            tasks.push(tokio::spawn(async move {
                let permit = g.acquire(at(deadline)).await;
                served.lock().unwrap().push(deadline);
                // The work holds its permit until the test lets it finish.
                let (finish_tx, finish_rx) = oneshot::channel::<()>();
                done_tx.send(finish_tx).unwrap();
                let _ = finish_rx.await;
                drop(permit);
            }));
            until_waiting(&gate, i + 1).await;
        }
        drop(held);
        // Serve until capacity for SERVED_IN_TIME requests is spent.
        let mut running = Vec::new();
        while served.lock().unwrap().len() < SERVED_IN_TIME {
            running.push(done_rx.recv().await.unwrap());
            if running.len() == CAPACITY && served.lock().unwrap().len() < SERVED_IN_TIME {
                drop(running.remove(0));
            }
        }
        let served_in_time: Vec<i64> = served.lock().unwrap().clone();
        assert_eq!(
            served_in_time,
            [10, 20, 30, 40, 50, 60],
            "earliest due served first"
        );
        assert_eq!(
            gate.backlog().waiting,
            deadlines.len() - SERVED_IN_TIME,
            "the rest still wait: 70, 80, 90 and 100, the latest due"
        );
        for t in tasks {
            t.abort();
        }
    }

    /// Work whose deadline passed while waiting goes behind work still in time, but gets one
    /// grant in four: the valid tokens stay valid and the expired ones recover.
    #[tokio::test]
    async fn expired_work_yields_to_work_in_time_but_is_not_starved() {
        let gate = DeadlineGate::new(1);
        let served = Arc::new(Mutex::new(Vec::new()));
        let held = gate.acquire(at(0)).await;
        let now = Timestamp::now();
        let offset = |s: i64| now.checked_add(jiff::SignedDuration::from_secs(s)).unwrap();
        let mut tasks = Vec::new();
        let waiters = [
            ("e1", -30),
            ("v3", 30),
            ("e2", -10),
            ("v1", 10),
            ("v5", 50),
            ("v2", 20),
            ("v4", 40),
        ];
        for (i, (name, secs)) in waiters.into_iter().enumerate() {
            let (g, served) = (gate.clone(), served.clone());
            let deadline = offset(secs);
            tasks.push(tokio::spawn(async move {
                let _permit = g.acquire(deadline).await;
                served.lock().unwrap().push(name);
            }));
            until_waiting(&gate, i + 1).await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            *served.lock().unwrap(),
            ["v1", "v2", "v3", "e1", "v4", "v5", "e2"]
        );
    }

    #[tokio::test]
    async fn capacity_bounds_the_holders() {
        let gate = DeadlineGate::new(2);
        let a = gate.acquire(at(0)).await;
        let _b = gate.acquire(at(0)).await;
        let third = tokio::time::timeout(Duration::from_millis(50), gate.acquire(at(0))).await;
        assert!(third.is_err(), "a third permit while two are out");
        drop(a);
        let third = tokio::time::timeout(Duration::from_secs(5), gate.acquire(at(0))).await;
        assert!(third.is_ok(), "a permit once one is returned");
    }

    #[tokio::test]
    async fn a_cancelled_waiter_neither_blocks_nor_leaks_the_permit() {
        let gate = DeadlineGate::new(1);
        let served = Arc::new(Mutex::new(Vec::new()));
        let held = gate.acquire(at(0)).await;
        let urgent = tokio::spawn({
            let gate = gate.clone();
            async move {
                let _p = gate.acquire(at(1)).await;
                std::future::pending::<()>().await;
            }
        });
        until_waiting(&gate, 1).await;
        let patient = waiter(&gate, 9, "patient", &served);
        until_waiting(&gate, 2).await;
        urgent.abort();
        let _ = urgent.await;
        drop(held);
        patient.await.unwrap();
        assert_eq!(*served.lock().unwrap(), ["patient"]);
        // The permit came back: it can be taken again at once.
        let again = tokio::time::timeout(Duration::from_secs(5), gate.acquire(at(0))).await;
        assert!(again.is_ok());
    }

    #[tokio::test]
    async fn backlog_reports_the_oldest_wait() {
        let gate = DeadlineGate::new(1);
        let _held = gate.acquire(at(0)).await;
        let _w = tokio::spawn({
            let gate = gate.clone();
            async move {
                let _p = gate.acquire(at(5)).await;
            }
        });
        until_waiting(&gate, 1).await;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(30) {
            tokio::task::yield_now().await;
        }
        let backlog = gate.backlog();
        assert_eq!(backlog.waiting, 1);
        assert!(backlog.oldest_wait_seconds >= 0.03, "{backlog:?}");
    }
}
