//! Recognises objects the watch cache has not caught up on.
//!
//! A reconcile that writes status several times (a creation records "pending", then the new
//! account, then Ready) triggers further reconciles, and the controller's store may hand one
//! of them a copy from between those writes. Acting on it repeats work: a needless upstream
//! read, and a status write that restores what is already there. Resource versions are
//! opaque and must not be compared, but a version this process wrote and then wrote over is
//! certainly stale; such a copy is skipped until the store catches up.

use std::collections::HashMap;
use std::sync::Mutex;

/// How many of an object's own writes are remembered (a reconcile makes at most a few).
const REMEMBERED: usize = 8;

/// A 64-bit digest of a UID or a resource version. Only equality is asked of versions, and
/// kept as digests an object's record is one fixed slot without allocations: as strings
/// (the UID, a deque of versions) it cost about 225 bytes per object, most of it small
/// allocations (4.5 MiB at 10,000 tokens and their service accounts, measured with
/// heaptrack). Two versions of one object whose digests collide (odds 2⁻⁶⁴) would at worst
/// make a current copy look stale until the next event.
use super::digest64 as digest;

/// The digests of an object's last writes, oldest first.
#[derive(Clone, Copy, Default)]
struct Versions {
    digests: [u64; REMEMBERED],
    len: u8,
}

impl Versions {
    fn as_slice(&self) -> &[u64] {
        &self.digests[..usize::from(self.len)]
    }

    fn push(&mut self, v: u64) {
        if usize::from(self.len) == REMEMBERED {
            self.digests.copy_within(1.., 0);
            self.len -= 1;
        }
        self.digests[usize::from(self.len)] = v;
        self.len += 1;
    }
}

/// The resource versions of this process's own writes, per object UID.
#[derive(Default)]
pub struct OwnWrites {
    by_uid: Mutex<HashMap<u64, Versions>>,
}

impl OwnWrites {
    /// Notes that a write of ours left the object at `resource_version`.
    pub fn record(&self, uid: &str, resource_version: Option<&str>) {
        self.record_over(uid, None, resource_version);
    }

    /// Notes that a write of ours, made from a copy at `written_over`, left the object at
    /// `resource_version`: the copy it was made from is older than the write, so it is stale
    /// too.
    pub fn record_over(
        &self,
        uid: &str,
        written_over: Option<&str>,
        resource_version: Option<&str>,
    ) {
        let (Some(rv), false) = (resource_version, uid.is_empty()) else {
            return;
        };
        let mut by_uid = self.by_uid.lock().expect("not poisoned");
        let versions = by_uid.entry(digest(uid)).or_default();
        for v in written_over.into_iter().chain([rv]).map(digest) {
            if versions.as_slice().contains(&v) {
                // A write that changed nothing leaves the version as it was; the copy of a
                // second write in one reconcile was recorded by the first.
                continue;
            }
            versions.push(v);
        }
    }

    /// True when `resource_version` is one of our writes that a later write of ours replaced:
    /// the copy is older than what the API server holds.
    ///
    /// A copy at our latest write means the cache has caught up, and a cache never goes back
    /// to an older copy, so there is nothing left to recognise: the record is dropped. Every
    /// write's own watch event brings such a copy, so at rest the table is (nearly) empty
    /// instead of one record per object that ever wrote (2.6 MiB at 10,000 token and account
    /// pairs, a hash table sized for 20,000 records).
    pub fn is_superseded(&self, uid: &str, resource_version: Option<&str>) -> bool {
        let Some(rv) = resource_version.map(digest) else {
            return false;
        };
        let key = digest(uid);
        let mut by_uid = self.by_uid.lock().expect("not poisoned");
        let Some(versions) = by_uid.get(&key) else {
            return false;
        };
        let versions = versions.as_slice();
        match versions.iter().position(|v| *v == rv) {
            Some(i) if i + 1 < versions.len() => true,
            Some(_) => {
                by_uid.remove(&key);
                super::shrink_if_sparse(&mut by_uid);
                false
            }
            None => false,
        }
    }

    /// Drops what is known of a deleted object.
    pub fn forget(&self, uid: &str) {
        self.forget_digest(digest(uid));
    }

    /// [`OwnWrites::forget`] for a caller that keeps the UID as its digest.
    pub fn forget_digest(&self, uid_digest: u64) {
        self.by_uid
            .lock()
            .expect("not poisoned")
            .remove(&uid_digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_versions_we_wrote_over_are_stale() {
        let writes = OwnWrites::default();
        writes.record("u", Some("10"));
        writes.record("u", Some("12"));
        writes.record("u", Some("12"));
        assert!(writes.is_superseded("u", Some("10")));
        assert!(
            !writes.is_superseded("u", Some("15")),
            "someone else's write"
        );
        assert!(!writes.is_superseded("other", Some("10")));
        assert!(!writes.is_superseded("u", None));
        assert!(writes.is_superseded("u", Some("10")), "still remembered");
        writes.forget("u");
        assert!(!writes.is_superseded("u", Some("10")));
        writes.record("u", Some("10"));
        writes.record("u", Some("12"));
        assert!(!writes.is_superseded("u", Some("12")), "our latest write");
    }

    #[test]
    fn a_copy_at_our_latest_write_ends_the_record() {
        let writes = OwnWrites::default();
        writes.record_over("u", Some("7"), Some("9"));
        assert!(writes.is_superseded("u", Some("7")), "still behind");
        assert!(!writes.is_superseded("u", Some("9")), "caught up");
        assert!(
            writes.by_uid.lock().unwrap().is_empty(),
            "nothing left to recognise"
        );
        writes.record_over("u", Some("9"), Some("11"));
        assert!(
            writes.is_superseded("u", Some("9")),
            "a later write is recorded anew"
        );
    }

    #[test]
    fn the_table_gives_its_room_back_once_caught_up() {
        let writes = OwnWrites::default();
        let uids: Vec<String> = (0..10_000).map(|i| format!("uid-{i}")).collect();
        for uid in &uids {
            writes.record_over(uid, Some("1"), Some("2"));
        }
        let burst = writes.by_uid.lock().unwrap().capacity();
        assert!(burst >= 10_000);
        for uid in &uids[..9_990] {
            assert!(!writes.is_superseded(uid, Some("2")));
        }
        let by_uid = writes.by_uid.lock().unwrap();
        assert_eq!(by_uid.len(), 10);
        assert!(
            by_uid.capacity() <= 4 * super::super::SHRINK_FLOOR,
            "capacity {} after the burst's {burst}",
            by_uid.capacity()
        );
    }

    #[test]
    fn the_copy_a_write_was_made_from_is_stale() {
        let writes = OwnWrites::default();
        writes.record_over("u", Some("7"), Some("9"));
        assert!(writes.is_superseded("u", Some("7")));
        assert!(!writes.is_superseded("u", Some("9")));
        // A no-op write from the current copy changes nothing.
        writes.record_over("u", Some("9"), Some("9"));
        assert!(!writes.is_superseded("u", Some("9")));
    }

    #[test]
    fn two_writes_from_one_copy_leave_only_the_last_current() {
        let writes = OwnWrites::default();
        writes.record_over("u", Some("7"), Some("9"));
        writes.record_over("u", Some("7"), Some("11"));
        assert!(writes.is_superseded("u", Some("7")));
        assert!(writes.is_superseded("u", Some("9")));
        assert_eq!(
            writes.by_uid.lock().unwrap()[&digest("u")].as_slice(),
            ["7", "9", "11"].map(digest),
            "the copy is remembered once"
        );
        assert!(!writes.is_superseded("u", Some("11")));
    }

    #[test]
    fn memory_is_bounded_per_object() {
        let writes = OwnWrites::default();
        for rv in 0..100 {
            writes.record("u", Some(&rv.to_string()));
        }
        assert!(!writes.is_superseded("u", Some("0")), "forgotten");
        assert!(writes.is_superseded("u", Some("98")));
        assert_eq!(
            writes.by_uid.lock().unwrap()[&digest("u")].as_slice(),
            (92..100)
                .map(|rv| digest(&rv.to_string()))
                .collect::<Vec<_>>(),
            "the last {REMEMBERED}, oldest first"
        );
    }
}
