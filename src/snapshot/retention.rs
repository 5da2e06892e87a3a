//! Which snapshot files to delete so that a camera's folder stays within its limits.
//!
//! Pure: the caller lists the files (name, size, age) and deletes what the plan says, so the
//! rule (oldest first, until both the count and the size limit hold, never the newest file)
//! is tested without a disk.

use std::time::SystemTime;

/// The limits of one camera's snapshot folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most files kept (0 is taken as 1: the newest file always stays).
    pub max_count: usize,
    /// Most bytes kept, all files together.
    pub max_bytes: u64,
}

/// One stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored<K> {
    /// What names it (the adapter: its path).
    pub id: K,
    /// Its size.
    pub bytes: u64,
    /// Its age: older files go first; equal times go in the order of `id`.
    pub time: SystemTime,
}

/// The files to delete, as indices into `files`, oldest first: the oldest go until at most
/// `max_count` files and `max_bytes` bytes remain. The newest file always stays, even when it
/// alone is over `max_bytes` (it is the snapshot an event has just named).
pub fn plan<K: Ord>(files: &[Stored<K>], limits: Limits) -> Vec<usize> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (&files[a], &files[b]);
        fa.time.cmp(&fb.time).then_with(|| fa.id.cmp(&fb.id))
    });
    let mut count = files.len();
    let mut bytes: u64 = files.iter().map(|f| f.bytes).fold(0, u64::saturating_add);
    let max_count = limits.max_count.max(1);
    let mut delete = Vec::new();
    for &i in order.iter().take(files.len().saturating_sub(1)) {
        if count <= max_count && bytes <= limits.max_bytes {
            break;
        }
        delete.push(i);
        count -= 1;
        bytes = bytes.saturating_sub(files[i].bytes);
    }
    delete
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn file(id: &'static str, bytes: u64, s: u64) -> Stored<&'static str> {
        Stored {
            id,
            bytes,
            time: at(s),
        }
    }

    fn limits(max_count: usize, max_bytes: u64) -> Limits {
        Limits {
            max_count,
            max_bytes,
        }
    }

    fn ids(files: &[Stored<&'static str>], plan: &[usize]) -> Vec<&'static str> {
        plan.iter().map(|&i| files[i].id).collect()
    }

    #[test]
    fn the_oldest_go_first_until_the_count_holds() {
        let files = [
            file("c", 1, 3),
            file("a", 1, 1),
            file("d", 1, 4),
            file("b", 1, 2),
        ];
        assert_eq!(ids(&files, &plan(&files, limits(2, 100))), ["a", "b"]);
        assert!(plan(&files, limits(4, 100)).is_empty());
        assert_eq!(ids(&files, &plan(&files, limits(0, 100))), ["a", "b", "c"]);
    }

    #[test]
    fn the_oldest_go_first_until_the_bytes_hold() {
        let files = [
            file("a", 50, 1),
            file("b", 10, 2),
            file("c", 30, 3),
            file("d", 20, 4),
        ];
        // 110 bytes; at most 60: a (50) goes, then 60 remain.
        assert_eq!(ids(&files, &plan(&files, limits(10, 60))), ["a"]);
        assert_eq!(ids(&files, &plan(&files, limits(10, 50))), ["a", "b"]);
        assert_eq!(ids(&files, &plan(&files, limits(10, 49))), ["a", "b", "c"]);
        // Both limits: whichever needs more.
        assert_eq!(ids(&files, &plan(&files, limits(1, 1000))), ["a", "b", "c"]);
    }

    #[test]
    fn the_newest_file_always_stays() {
        let files = [file("old", 10, 1), file("huge", 1000, 2)];
        assert_eq!(ids(&files, &plan(&files, limits(5, 100))), ["old"]);
        assert!(plan(&[file("only", 1000, 1)], limits(1, 1)).is_empty());
        assert!(plan::<&str>(&[], limits(1, 1)).is_empty());
    }

    #[test]
    fn equal_times_go_in_name_order() {
        let files = [file("b", 1, 5), file("a", 1, 5), file("c", 1, 5)];
        assert_eq!(ids(&files, &plan(&files, limits(1, 100))), ["a", "b"]);
    }

    proptest! {
        /// What remains holds both limits (or is the newest file alone); everything deleted is
        /// older than everything kept; deleting one file fewer would break a limit; the plan
        /// lists each file once, oldest first.
        #[test]
        fn plans_are_minimal_and_oldest_first(
            raw in proptest::collection::vec((0u64..5000, 0u64..50), 0..40),
            max_count in 0usize..20,
            max_bytes in 0u64..60_000,
        ) {
            let files: Vec<Stored<usize>> = raw
                .iter()
                .enumerate()
                .map(|(i, &(bytes, s))| Stored { id: i, bytes, time: at(s) })
                .collect();
            let l = limits(max_count, max_bytes);
            let p = plan(&files, l);
            let mut seen = std::collections::BTreeSet::new();
            for &i in &p {
                prop_assert!(i < files.len() && seen.insert(i), "{p:?}");
            }
            let age = |i: usize| (files[i].time, files[i].id);
            prop_assert!(p.windows(2).all(|w| age(w[0]) < age(w[1])), "oldest first");
            let kept: Vec<usize> = (0..files.len()).filter(|i| !seen.contains(i)).collect();
            if let (Some(&newest_deleted), Some(oldest_kept)) =
                (p.last(), kept.iter().map(|&i| age(i)).min())
            {
                prop_assert!(age(newest_deleted) < oldest_kept);
            }
            if !files.is_empty() {
                let newest = (0..files.len()).max_by_key(|&i| age(i)).unwrap();
                prop_assert!(kept.contains(&newest), "the newest stays");
            }
            let bytes = |set: &[usize]| set.iter().map(|&i| files[i].bytes).sum::<u64>();
            let holds = |n: usize, b: u64| n <= max_count.max(1) && b <= max_bytes;
            prop_assert!(holds(kept.len(), bytes(&kept)) || kept.len() == 1.min(files.len()));
            if let Some(&last) = p.last() {
                let mut with_last = kept.clone();
                with_last.push(last);
                prop_assert!(!holds(with_last.len(), bytes(&with_last)), "minimal");
            }
        }
    }
}
