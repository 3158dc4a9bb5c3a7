//! The compiled filter patterns of the resources this worker scans, kept between attempts: a
//! resource's patterns are compiled once per version of its options (not on every attempt),
//! within a budget of entries and bytes, so the cache never holds more than a few MiB.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use metasync_shared::ids::ResourceId;
use metasync_shared::scan_options::{Filters, ScanOptions};

/// Most resources whose filters are kept.
pub const MAX_ENTRIES: usize = 256;
/// Most bytes of compiled filters kept ([`Filters::memory_usage`], which counts the matching
/// cache each pattern may grow). A real filter takes a few KB, so this keeps hundreds; the
/// worst options the limits allow take about as much as this alone, and are compiled for
/// their attempt and not kept.
pub const MAX_BYTES: usize = 4 * 1024 * 1024;

/// Compiled filters by resource, least recently used evicted first.
#[derive(Debug)]
pub struct FilterCache {
    inner: Mutex<Inner>,
    max_entries: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<ResourceId, Entry>,
    bytes: usize,
    /// Counts lookups; an entry's `used` is the count at its last one.
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    filters: Arc<Filters>,
    used: u64,
}

/// Where a lookup's filters came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Compiled before, from the same patterns.
    Hit,
    /// Compiled now (first use, or the patterns changed), and kept.
    Compiled,
    /// Compiled now and not kept: larger than the whole budget.
    Uncached,
}

impl Default for FilterCache {
    fn default() -> Self {
        Self::new(MAX_ENTRIES, MAX_BYTES)
    }
}

impl FilterCache {
    /// A cache of at most `max_entries` resources and `max_bytes` of compiled filters.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::default(),
            max_entries,
            max_bytes,
        }
    }

    /// The filters of `resource`'s `options`: the kept ones if they were compiled from the
    /// same patterns, else compiled now (outside the lock) and kept if they fit.
    pub fn get(
        &self,
        resource: ResourceId,
        options: &ScanOptions,
    ) -> Result<(Arc<Filters>, Lookup), String> {
        {
            let mut inner = self.lock();
            inner.clock += 1;
            let now = inner.clock;
            if let Some(entry) = inner.entries.get_mut(&resource)
                && entry.filters.compiled_from(options)
            {
                entry.used = now;
                return Ok((entry.filters.clone(), Lookup::Hit));
            }
        }
        let filters = Arc::new(options.compile()?);
        let size = filters.memory_usage();
        let mut inner = self.lock();
        // The old version (or a concurrent compile of this one) goes first.
        if let Some(old) = inner.entries.remove(&resource) {
            inner.bytes -= old.filters.memory_usage();
        }
        if size > self.max_bytes {
            return Ok((filters, Lookup::Uncached));
        }
        while inner.entries.len() >= self.max_entries || inner.bytes + size > self.max_bytes {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(id, _)| *id)
            else {
                break;
            };
            if let Some(evicted) = inner.entries.remove(&oldest) {
                inner.bytes -= evicted.filters.memory_usage();
            }
        }
        let used = inner.clock;
        inner.bytes += size;
        inner.entries.insert(
            resource,
            Entry {
                filters: filters.clone(),
                used,
            },
        );
        Ok((filters, Lookup::Compiled))
    }

    /// How many resources' filters are kept, and their bytes.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.entries.len(), inner.bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update is whole).
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn options(value: serde_json::Value) -> ScanOptions {
        ScanOptions::parse(&value).unwrap()
    }

    #[test]
    fn unchanged_patterns_are_compiled_once_and_a_new_version_is_compiled_again() {
        let cache = FilterCache::default();
        let rid = ResourceId::new_v7();
        let v1 = options(json!({ "include_schemas": ["sales"] }));
        let (first, lookup) = cache.get(rid, &v1).unwrap();
        assert_eq!(lookup, Lookup::Compiled);
        let (again, lookup) = cache.get(rid, &v1).unwrap();
        assert_eq!(lookup, Lookup::Hit);
        assert!(Arc::ptr_eq(&first, &again));
        // Options read again from the row (depth changed, patterns not): still a hit.
        let reread = options(json!({ "include_schemas": ["sales"], "depth": 2 }));
        assert_eq!(cache.get(rid, &reread).unwrap().1, Lookup::Hit);
        // A new version of the patterns replaces the old one.
        let v2 = options(json!({ "include_schemas": ["sales", "hr"] }));
        let (second, lookup) = cache.get(rid, &v2).unwrap();
        assert_eq!(lookup, Lookup::Compiled);
        assert!(second.schema_included("hr") && !first.schema_included("hr"));
        assert_eq!(cache.usage(), (1, second.memory_usage()));
        // Another resource with the same patterns has its own entry.
        let other = ResourceId::new_v7();
        assert_eq!(cache.get(other, &v2).unwrap().1, Lookup::Compiled);
        assert_eq!(cache.usage().0, 2);
    }

    #[test]
    fn a_bad_stored_pattern_is_an_error_and_nothing_is_kept() {
        let cache = FilterCache::default();
        let stored: ScanOptions =
            serde_json::from_value(json!({ "exclude_tables": ["("] })).unwrap();
        let err = cache.get(ResourceId::new_v7(), &stored).unwrap_err();
        assert!(err.contains("exclude_tables"), "{err}");
        assert_eq!(cache.usage(), (0, 0));
    }

    #[test]
    fn the_cache_stays_within_its_entries_and_bytes() {
        let small = options(json!({ "include_tables": ["t_.*"] }));
        let one = small.compile().unwrap().memory_usage();
        // Room for three entries' bytes, and at most five entries.
        let cache = FilterCache::new(5, 3 * one);
        let ids: Vec<ResourceId> = (0..10).map(|_| ResourceId::new_v7()).collect();
        for id in &ids {
            cache.get(*id, &small).unwrap();
            let (entries, bytes) = cache.usage();
            assert!(
                entries <= 3 && bytes <= 3 * one,
                "{entries} entries, {bytes} bytes"
            );
        }
        // The most recently used stay; the oldest went first.
        assert_eq!(cache.get(ids[9], &small).unwrap().1, Lookup::Hit);
        assert_eq!(cache.get(ids[0], &small).unwrap().1, Lookup::Compiled);
        let cache = FilterCache::new(2, usize::MAX);
        for id in &ids {
            cache.get(*id, &small).unwrap();
            assert!(cache.usage().0 <= 2);
        }
        // Filters larger than the whole budget are used, not kept.
        let cache = FilterCache::new(5, one - 1);
        let (filters, lookup) = cache.get(ids[0], &small).unwrap();
        assert_eq!(lookup, Lookup::Uncached);
        assert!(filters.table_included("s", "t_1"));
        assert_eq!(cache.usage(), (0, 0));
    }

    #[test]
    fn the_worst_options_allowed_fit_the_default_budget_bound() {
        // 32 patterns, each the longest `\w{n}` repetition that still compiles under the
        // per-pattern limits: what tests/tests/memory.rs syncs.
        let n = (1..200)
            .rev()
            .find(|n| options_ok(&json!({ "include_tables": [format!(r"\w{{{n}}}")] })))
            .unwrap();
        let worst = json!({ "include_tables": vec![format!(r"\w{{{n}}}"); 32] });
        let worst = options(worst);
        let size = worst.compile().unwrap().memory_usage();
        eprintln!("the worst options allowed compile to {size} bytes");
        // Either kept within the budget or compiled per attempt; never more than the budget.
        let cache = FilterCache::default();
        let rid = ResourceId::new_v7();
        cache.get(rid, &worst).unwrap();
        cache.get(rid, &worst).unwrap();
        assert!(cache.usage().1 <= MAX_BYTES);
    }

    fn options_ok(value: &serde_json::Value) -> bool {
        ScanOptions::parse(value).is_ok()
    }
}
