//! Publishes Kubernetes events (`events.k8s.io/v1`) and folds a repeat of the same event into
//! a series, as kube's `Recorder` does, remembering only what a repeat needs.
//!
//! kube's `Recorder` keeps every event it published in the last six minutes as a whole
//! `Event` object keyed by a second copy of its references (about 3 KiB an event), clears old
//! ones only when the next event is published, and scans them all under one write lock on every
//! publish. While 10,000 objects were applied that cache grew to ~130 MiB (measured with
//! jemalloc's statistics: half the operator's live heap) and stayed there while the operator
//! was quiet. Here a series is a 64-bit key and the event's name and count (~100 bytes), and
//! old ones are swept at most every [`SWEEP_EVERY`].

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Mutex,
};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event as K8sEvent},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    runtime::events::{Event, EventType, Reporter},
};

/// How long a published event stays open for repeats (kube's `Recorder` and client-go use
/// the same six minutes).
pub const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);
/// Closed series are dropped at most this often, on a publish.
pub const SWEEP_EVERY: SignedDuration = SignedDuration::from_secs(30);

/// The longest event note the API server accepts (`events.k8s.io/v1`: 1 KiB); a longer one
/// gets the whole event refused.
pub const MAX_NOTE_BYTES: usize = 1024;

/// `note` cut to [`MAX_NOTE_BYTES`] at a character boundary, marked with an ellipsis when cut.
fn fit_note(note: &str) -> String {
    if note.len() <= MAX_NOTE_BYTES {
        return note.to_string();
    }
    const MORE: &str = "…";
    let mut end = MAX_NOTE_BYTES - MORE.len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MORE}", &note[..end])
}

/// Publishes events for the whole operator (both controllers share one).
pub struct EventPublisher {
    client: Client,
    reporter: Reporter,
    series: Mutex<SeriesCache>,
}

impl EventPublisher {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            series: Mutex::default(),
        }
    }

    /// Creates the event, or extends its open series when the same event (type, reason,
    /// action and objects) was published within [`SERIES_TTL`]. The note of a repeat is not
    /// sent: a series keeps its first note, as with kube's `Recorder`.
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = series_key(ev, regarding);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let repeat = self.cache().repeat(key, now);
        if let Some(Repeat { first, count }) = repeat {
            let name = event_name(regarding, &self.reporter.controller, first);
            let patch = serde_json::json!({
                "series": {"count": count, "lastObservedTime": MicroTime(now)},
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.cache().record(key, first, count, now);
                    return Ok(());
                }
                // Deleted meanwhile (event TTL, a user): start a new one.
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(err) => return Err(err),
            }
        }
        let event = new_event(&self.reporter, ev, regarding, now);
        api.create(&PostParams::default(), &event).await?;
        self.cache().record(key, now, 1, now);
        Ok(())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, SeriesCache> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The name of the event about `regarding` created at `first`: the object's name and the time,
/// so that a series need not keep the name to patch it again.
fn event_name(regarding: &ObjectReference, controller: &str, first: Timestamp) -> String {
    let object = regarding.name.as_deref().unwrap_or(controller);
    format!("{object}.{:x}", first.as_nanosecond())
}

fn new_event(
    reporter: &Reporter,
    ev: &Event,
    regarding: &ObjectReference,
    now: Timestamp,
) -> K8sEvent {
    let controller = &reporter.controller;
    K8sEvent {
        action: Some(ev.action.clone()),
        reason: Some(ev.reason.clone()),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding.clone()),
        related: ev.secondary.clone(),
        note: ev.note.as_deref().map(fit_note),
        metadata: ObjectMeta {
            namespace: regarding.namespace.clone(),
            name: Some(event_name(regarding, controller, now)),
            ..ObjectMeta::default()
        },
        reporting_controller: Some(controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| controller.clone()),
        ),
        type_: Some(type_name(ev.type_).into()),
        ..K8sEvent::default()
    }
}

fn type_name(t: EventType) -> &'static str {
    match t {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// What identifies a series: the fields kube's `Recorder` keys on (the reporter is the same for
/// every event of this publisher), hashed. Two different events sharing a key (odds ~1 in
/// 10^10 among 100,000 open series) would only extend the wrong series' count.
fn series_key(ev: &Event, regarding: &ObjectReference) -> u64 {
    let mut h = DefaultHasher::new();
    type_name(ev.type_).hash(&mut h);
    ev.reason.hash(&mut h);
    ev.action.hash(&mut h);
    hash_reference(regarding, &mut h);
    match &ev.secondary {
        Some(related) => {
            1u8.hash(&mut h);
            hash_reference(related, &mut h);
        }
        None => 0u8.hash(&mut h),
    }
    h.finish()
}

fn hash_reference(r: &ObjectReference, h: &mut DefaultHasher) {
    r.api_version.hash(h);
    r.kind.hash(h);
    r.namespace.hash(h);
    r.name.hash(h);
    r.uid.hash(h);
    r.resource_version.hash(h);
    r.field_path.hash(h);
}

/// The open series: what a repeat patches.
#[derive(Debug, Default)]
struct SeriesCache {
    open: HashMap<u64, Series>,
    swept_at: Option<Timestamp>,
}

/// An open series: when its event was created (which, with the object's name, names it:
/// [`event_name`]; kept as the name, it was an allocation per open series,
/// ~1 MiB for the 20,000 objects of an apply for six minutes after it), its count and when it
/// was last seen.
#[derive(Debug)]
struct Series {
    first: Timestamp,
    count: i32,
    last_observed: Timestamp,
}

/// A repeat of an open series: when the event to patch was created, and its new count.
#[derive(Debug, PartialEq, Eq)]
struct Repeat {
    first: Timestamp,
    count: i32,
}

impl SeriesCache {
    /// The series `key` extends at `now`, if one is open; sweeps closed series when due.
    fn repeat(&mut self, key: u64, now: Timestamp) -> Option<Repeat> {
        if self
            .swept_at
            .is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY)
        {
            self.sweep(now);
        }
        self.open
            .get(&key)
            .filter(|s| s.last_observed + SERIES_TTL > now)
            .map(|s| Repeat {
                first: s.first,
                count: s.count + 1,
            })
    }

    /// Notes that the event created at `first` was published (`count` times) at `now`.
    fn record(&mut self, key: u64, first: Timestamp, count: i32, now: Timestamp) {
        self.open.insert(
            key,
            Series {
                first,
                count,
                last_observed: now,
            },
        );
    }

    fn sweep(&mut self, now: Timestamp) {
        self.swept_at = Some(now);
        self.open.retain(|_, s| s.last_observed + SERIES_TTL > now);
        super::shrink_if_sparse(&mut self.open);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn reference(name: &str, rv: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("gebeta.et/v1alpha1".into()),
            kind: Some("GebetaAccessToken".into()),
            namespace: Some("team".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some(rv.into()),
            field_path: None,
        }
    }

    fn event(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Write".into(),
            secondary: None,
        }
    }

    #[test]
    fn the_same_event_within_the_ttl_extends_its_series() {
        let mut cache = SeriesCache::default();
        let key = series_key(&event("SecretConflict", "a"), &reference("maps", "1"));
        assert_eq!(cache.repeat(key, at(0)), None);
        cache.record(key, at(0), 1, at(0));
        assert_eq!(
            cache.repeat(key, at(60)),
            Some(Repeat {
                first: at(0),
                count: 2
            })
        );
        cache.record(key, at(0), 2, at(60));
        // Six minutes after the last repeat, not after the first event.
        assert_eq!(cache.repeat(key, at(60 + 359)).map(|r| r.count), Some(3));
        assert_eq!(cache.repeat(key, at(60 + 360)), None);
    }

    #[test]
    fn a_repeat_patches_the_event_that_was_created() {
        let reporter = Reporter {
            controller: "gebeta-operator".into(),
            instance: Some("pod-1".into()),
        };
        let ev = event("SecretConflict", "a");
        let regarding = reference("maps", "1");
        let key = series_key(&ev, &regarding);
        let created = new_event(&reporter, &ev, &regarding, at(5));
        let mut cache = SeriesCache::default();
        cache.record(key, at(5), 1, at(5));
        let repeat = cache.repeat(key, at(65)).expect("open");
        assert_eq!(
            created.metadata.name,
            Some(event_name(&regarding, &reporter.controller, repeat.first))
        );
        assert_ne!(
            created.metadata.name,
            Some(event_name(&regarding, &reporter.controller, at(65))),
            "named by its creation, not by the repeat"
        );
    }

    #[test]
    fn notes_fit_the_api_servers_limit_and_are_cut_at_a_character_boundary() {
        assert_eq!(fit_note("short"), "short");
        let exact = "a".repeat(MAX_NOTE_BYTES);
        assert_eq!(fit_note(&exact), exact);
        // Two-byte characters with the limit falling inside one.
        let long = format!("a{}", "é".repeat(MAX_NOTE_BYTES));
        let cut = fit_note(&long);
        assert!(cut.len() <= MAX_NOTE_BYTES, "{}", cut.len());
        assert!(cut.len() > MAX_NOTE_BYTES - 8);
        assert!(cut.ends_with('…') && long.starts_with(cut.trim_end_matches('…')));
    }

    #[test]
    fn the_key_is_what_kube_keys_on_and_not_the_note() {
        let base = series_key(&event("SecretConflict", "a"), &reference("maps", "1"));
        assert_eq!(
            base,
            series_key(
                &event("SecretConflict", "another note"),
                &reference("maps", "1")
            )
        );
        for other in [
            series_key(&event("WriteFailed", "a"), &reference("maps", "1")),
            series_key(&event("SecretConflict", "a"), &reference("maps", "2")),
            series_key(&event("SecretConflict", "a"), &reference("tiles", "1")),
            series_key(
                &Event {
                    type_: EventType::Normal,
                    ..event("SecretConflict", "a")
                },
                &reference("maps", "1"),
            ),
            series_key(
                &Event {
                    secondary: Some(reference("other", "1")),
                    ..event("SecretConflict", "a")
                },
                &reference("maps", "1"),
            ),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn closed_series_are_swept_and_the_table_shrinks() {
        let mut cache = SeriesCache::default();
        for i in 0..10_000u64 {
            cache.record(i, at(0), 1, at(0));
        }
        let burst = cache.open.capacity();
        // Not yet closed: nothing swept.
        cache.repeat(u64::MAX, at(SERIES_TTL.as_secs() - 1));
        assert_eq!(cache.open.len(), 10_000);
        // Swept at most every SWEEP_EVERY: a publish a second later does not scan again.
        cache.record(0, at(0), 2, at(SERIES_TTL.as_secs()));
        cache.repeat(u64::MAX, at(SERIES_TTL.as_secs() + 1));
        assert_eq!(cache.open.len(), 10_000);
        cache.repeat(
            u64::MAX,
            at(SERIES_TTL.as_secs() - 1 + SWEEP_EVERY.as_secs()),
        );
        assert_eq!(
            cache.open.len(),
            1,
            "only the series repeated since is open"
        );
        assert!(
            cache.open.capacity() < burst / 4,
            "{}",
            cache.open.capacity()
        );
    }
}
