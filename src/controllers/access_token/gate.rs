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
//!
//! A reconcile can also wait without staying parked: [`DeadlineGate::try_acquire_or_defer`]
//! leaves the object's key in the queue and the reconcile returns. When the key's turn comes
//! its permit is reserved and the gate's trigger asks the controller for a reconcile of that
//! object, which [`claims`](DeadlineGate::claim) it. kube-runtime's runner polls every
//! running reconcile each time it wakes, so a burst of due tokens parked here (10,000 after
//! an outage or a restart) cost time in proportion to its size on every wake, and each parked
//! reconcile held its frames. A reservation not claimed in time (the object went away) is
//! handed on by [`DeadlineGate::reclaim`].

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use tokio::sync::oneshot;

/// While both expired and still-valid work waits, one grant in this many goes to the work
/// whose deadline passed longest ago.
pub const RECOVERY_EVERY: u32 = 4;

/// An object whose work waits without a parked reconcile: its namespace and name.
pub type Key = (String, String);

/// Asks the controller for a reconcile of the object whose reserved turn came.
pub type Trigger = Box<dyn Fn(&Key) + Send + Sync>;

/// Bounds the work in flight and hands it out earliest deadline first.
pub struct DeadlineGate {
    inner: Mutex<Inner>,
    trigger: Option<Trigger>,
}

struct Inner {
    free: usize,
    next_seq: u64,
    /// By deadline, then arrival.
    waiting: BTreeMap<(Timestamp, u64), Waiter>,
    /// Where each deferred key stands in `waiting` (one place per key).
    deferred: HashMap<Key, (Timestamp, u64)>,
    /// Permits held for keys whose turn came, until their reconcile claims them.
    reserved: HashMap<Key, Instant>,
    /// Grants to work still in time since the last grant to expired work.
    since_recovery: u32,
}

struct Waiter {
    since: Instant,
    wake: Wake,
}

/// How a waiter learns that its turn came.
enum Wake {
    /// A reconcile parked in [`DeadlineGate::acquire`].
    Parked(oneshot::Sender<()>),
    /// A reconcile that returned: the permit is reserved for the key and a new reconcile
    /// triggered.
    Deferred(Key),
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
        Self::build(capacity, None)
    }

    /// A gate that can also defer work (see the module docs): `trigger` asks for a reconcile
    /// of an object whose permit was reserved.
    pub fn deferring(capacity: usize, trigger: Trigger) -> Arc<DeadlineGate> {
        Self::build(capacity, Some(trigger))
    }

    fn build(capacity: usize, trigger: Option<Trigger>) -> Arc<DeadlineGate> {
        Arc::new(DeadlineGate {
            inner: Mutex::new(Inner {
                free: capacity.max(1),
                next_seq: 0,
                waiting: BTreeMap::new(),
                deferred: HashMap::new(),
                reserved: HashMap::new(),
                since_recovery: 0,
            }),
            trigger,
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
                    wake: Wake::Parked(grant),
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

    /// A permit now if one is free and nothing waits; otherwise `key` keeps (or takes) a
    /// place in the queue, at the earlier of its deadlines, and `None` tells the reconcile to
    /// return: a new one is triggered when the key's turn comes (see the module docs).
    pub fn try_acquire_or_defer(
        self: &Arc<Self>,
        key: &Key,
        deadline: Timestamp,
    ) -> Option<Permit> {
        let mut inner = self.lock();
        // The key's turn came while this reconcile ran (it claimed before the turn came): the
        // permit reserved for it is this reconcile's. Queuing the key again would let a later
        // turn reserve a second permit under the same key, and one of the two would never be
        // handed back.
        if inner.reserved.remove(key).is_some() {
            return Some(Permit { gate: self.clone() });
        }
        if inner.free > 0 && inner.waiting.is_empty() {
            inner.free -= 1;
            return Some(Permit { gate: self.clone() });
        }
        let (seq, since) = match inner.deferred.get(key).copied() {
            Some(place) if place.0 <= deadline => return None,
            Some(place) => (place.1, inner.waiting.remove(&place).map(|w| w.since)),
            None => {
                inner.next_seq += 1;
                (inner.next_seq - 1, None)
            }
        };
        inner.deferred.insert(key.clone(), (deadline, seq));
        inner.waiting.insert(
            (deadline, seq),
            Waiter {
                since: since.unwrap_or_else(Instant::now),
                wake: Wake::Deferred(key.clone()),
            },
        );
        None
    }

    /// The permit reserved for `key` when its turn came, if no reconcile took it yet.
    pub fn claim(self: &Arc<Self>, key: &Key) -> Option<Permit> {
        self.lock()
            .reserved
            .remove(key)
            .map(|_| Permit { gate: self.clone() })
    }

    /// Gives up `key`'s place and hands on a permit reserved for it: the object is gone.
    pub fn forget(&self, key: &Key) {
        let reserved = {
            let mut inner = self.lock();
            if let Some(place) = inner.deferred.remove(key) {
                inner.waiting.remove(&place);
            }
            inner.reserved.remove(key).is_some()
        };
        if reserved {
            self.release();
        }
    }

    /// Hands on the permits reserved longer than `ttl` ago and never claimed (a trigger
    /// for an object that went away, or a controller that stopped).
    pub fn reclaim(&self, ttl: Duration) {
        let stale = {
            let mut inner = self.lock();
            let before = inner.reserved.len();
            inner.reserved.retain(|_, at| at.elapsed() < ttl);
            before - inner.reserved.len()
        };
        for _ in 0..stale {
            self.release();
        }
    }

    /// Hands a returned permit to the most urgent live waiter, or frees it.
    fn release(&self) {
        loop {
            let next = {
                let mut inner = self.lock();
                match inner.next(Timestamp::now()) {
                    Some(Waiter {
                        wake: Wake::Deferred(key),
                        ..
                    }) => {
                        inner.deferred.remove(&key);
                        // One reservation per key: a key holding one already needs no
                        // second (its map entry could hold only one of the two).
                        if inner.reserved.contains_key(&key) {
                            continue;
                        }
                        inner.reserved.insert(key.clone(), Instant::now());
                        Err(key)
                    }
                    Some(Waiter {
                        wake: Wake::Parked(grant),
                        ..
                    }) => Ok(grant),
                    None => {
                        inner.free += 1;
                        return;
                    }
                }
            };
            match next {
                Ok(grant) => {
                    if grant.send(()).is_ok() {
                        return;
                    }
                    // That waiter is gone: try the next one.
                }
                Err(key) => {
                    if let Some(trigger) = &self.trigger {
                        trigger(&key);
                    }
                    return;
                }
            }
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

    fn key(name: &str) -> Key {
        ("ns".to_string(), name.to_string())
    }

    /// A gate of `capacity` whose trigger records the keys whose turn came.
    fn deferring(capacity: usize) -> (Arc<DeadlineGate>, Arc<Mutex<Vec<String>>>) {
        let triggered = Arc::new(Mutex::new(Vec::new()));
        let seen = triggered.clone();
        let gate = DeadlineGate::deferring(
            capacity,
            Box::new(move |k: &Key| seen.lock().unwrap().push(k.1.clone())),
        );
        (gate, triggered)
    }

    #[test]
    fn deferred_keys_are_triggered_earliest_deadline_first_and_claim_their_permit() {
        let (gate, triggered) = deferring(1);
        let held = gate.try_acquire_or_defer(&key("first"), at(0));
        assert!(held.is_some(), "a free permit is taken at once");
        for (name, deadline) in [("late", 50), ("soon", 10), ("mid", 30)] {
            assert!(
                gate.try_acquire_or_defer(&key(name), at(deadline))
                    .is_none()
            );
        }
        // Asking again keeps one place per key: a later deadline does not move it back, an
        // earlier one moves it forward.
        assert!(gate.try_acquire_or_defer(&key("soon"), at(60)).is_none());
        assert!(gate.try_acquire_or_defer(&key("late"), at(20)).is_none());
        assert_eq!(gate.backlog().waiting, 3);
        assert!(gate.claim(&key("soon")).is_none(), "nothing reserved yet");

        drop(held);
        assert_eq!(*triggered.lock().unwrap(), ["soon"]);
        assert!(
            gate.try_acquire_or_defer(&key("other"), at(0)).is_none(),
            "a reserved permit is not free"
        );
        let soon = gate.claim(&key("soon")).expect("reserved for the key");
        assert!(gate.claim(&key("soon")).is_none(), "claimed once");
        drop(soon);
        let other = gate
            .claim(&key("other"))
            .expect("the earliest deadline of those left");
        drop(other);
        let late = gate.claim(&key("late")).expect("moved forward to 20");
        drop(late);
        let mid = gate.claim(&key("mid")).expect("last");
        drop(mid);
        assert_eq!(*triggered.lock().unwrap(), ["soon", "other", "late", "mid"]);
        assert_eq!(gate.backlog(), Backlog::default());
        assert!(gate.try_acquire_or_defer(&key("again"), at(0)).is_some());
    }

    #[tokio::test]
    async fn parked_and_deferred_waiters_share_one_order() {
        let (gate, triggered) = deferring(1);
        let served = Arc::new(Mutex::new(Vec::new()));
        let held = gate.acquire(at(0)).await;
        assert!(
            gate.try_acquire_or_defer(&key("deferred-20"), at(20))
                .is_none()
        );
        let parked = waiter(&gate, 10, "parked-10", &served);
        until_waiting(&gate, 2).await;
        drop(held);
        parked.await.unwrap();
        assert_eq!(*served.lock().unwrap(), ["parked-10"]);
        assert_eq!(*triggered.lock().unwrap(), ["deferred-20"]);
    }

    #[test]
    fn a_forgotten_key_gives_up_its_place_and_its_reserved_permit() {
        let (gate, triggered) = deferring(1);
        let held = gate.try_acquire_or_defer(&key("a"), at(0)).unwrap();
        assert!(
            gate.try_acquire_or_defer(&key("gone-early"), at(5))
                .is_none()
        );
        assert!(
            gate.try_acquire_or_defer(&key("gone-late"), at(10))
                .is_none()
        );
        assert!(gate.try_acquire_or_defer(&key("b"), at(20)).is_none());
        gate.forget(&key("gone-early"));
        drop(held);
        assert_eq!(*triggered.lock().unwrap(), ["gone-late"]);
        gate.forget(&key("gone-late"));
        assert_eq!(*triggered.lock().unwrap(), ["gone-late", "b"]);
        assert!(gate.claim(&key("b")).is_some());
    }

    /// A reconcile that started before its key's turn came (so its claim found nothing) and
    /// then asks for a permit takes the one reserved for the key; queuing the key again let a
    /// second turn reserve another permit under the same key, and one was never handed back.
    #[test]
    fn a_turn_that_comes_during_a_running_reconcile_reserves_one_permit_for_it() {
        let (gate, triggered) = deferring(2);
        let a = gate.try_acquire_or_defer(&key("a"), at(0)).unwrap();
        let b = gate.try_acquire_or_defer(&key("b"), at(0)).unwrap();
        assert!(gate.try_acquire_or_defer(&key("x"), at(5)).is_none());
        // A second reconcile of x starts (an input changed): nothing is reserved yet.
        assert!(gate.claim(&key("x")).is_none());
        drop(a);
        assert_eq!(*triggered.lock().unwrap(), ["x"]);
        let running = gate
            .try_acquire_or_defer(&key("x"), at(5))
            .expect("the permit reserved for x");
        drop(b);
        // The reconcile the turn triggered finds the permit taken.
        assert!(gate.claim(&key("x")).is_none());
        drop(running);
        assert_eq!(*triggered.lock().unwrap(), ["x"]);
        let all: Vec<_> = ["c", "d"]
            .iter()
            .map(|k| gate.try_acquire_or_defer(&key(k), at(0)))
            .collect();
        assert!(
            all.iter().all(Option::is_some),
            "both permits are back: {:?}",
            all.iter().map(Option::is_some).collect::<Vec<_>>()
        );
        assert_eq!(gate.backlog(), Backlog::default());
    }

    #[test]
    fn a_reservation_never_claimed_is_handed_on() {
        let (gate, triggered) = deferring(1);
        let held = gate.try_acquire_or_defer(&key("a"), at(0)).unwrap();
        assert!(gate.try_acquire_or_defer(&key("lost"), at(5)).is_none());
        assert!(gate.try_acquire_or_defer(&key("b"), at(9)).is_none());
        drop(held);
        gate.reclaim(Duration::from_secs(60));
        assert_eq!(
            *triggered.lock().unwrap(),
            ["lost"],
            "young reservations stay"
        );
        gate.reclaim(Duration::ZERO);
        assert_eq!(*triggered.lock().unwrap(), ["lost", "b"]);
        assert!(gate.claim(&key("lost")).is_none());
        assert!(gate.claim(&key("b")).is_some());
    }
}
