//! The production engine: RocksDB with one column family per table.

use std::{ops::Bound, path::Path};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options,
    ReadOptions, WriteBatch, WriteBufferManager, WriteOptions,
    statistics::{StatsLevel, Ticker},
};

use super::{KvEngine, RawIter, WriteOp};
use crate::{Error, Result};

pub struct RocksEngine {
    db: rocksdb::DB,
    /// The options the database was opened with: their statistics count cache hits.
    options: Options,
    column_families: Vec<String>,
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksEngine").field("path", &self.db.path()).finish()
    }
}

fn engine_err(e: rocksdb::Error) -> Error {
    Error::Engine(e.into_string())
}

const MIB: usize = 1024 * 1024;

/// How one memory budget (`storage.cache_mb`) is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Budget {
    /// Block cache capacity: everything below is charged to it.
    total: usize,
    /// Memtables of all tables together, at most.
    memtables: usize,
    /// One table's memtable before it is flushed.
    write_buffer: usize,
    arena_block: usize,
}

impl Budget {
    fn new(bytes: usize) -> Self {
        // Below this RocksDB thrashes; nobody should configure less.
        let total = bytes.max(16 * MIB);
        // A quarter for writes not yet flushed, enough to absorb bursts; the rest caches reads.
        let memtables = total / 4;
        // A few tables (timeline, events, stream) take nearly all writes, so one table's buffer
        // may use an eighth of the memtable share; the rest sit nearly empty.
        let write_buffer = (memtables / 8).clamp(MIB, 64 * MIB);
        let arena_block = (write_buffer / 16).clamp(64 * 1024, MIB);
        Self { total, memtables, write_buffer, arena_block }
    }
}

impl RocksEngine {
    /// Opens (creating if needed) the database at `path` with exactly `column_families`, using
    /// about `cache_bytes` of memory (block cache and memtables together).
    /// Column families on disk that the catalog no longer names are opened too, so that an older
    /// build's data is never silently dropped; migrations decide what to do with them.
    pub fn open(path: &Path, column_families: &[&'static str], cache_bytes: usize) -> Result<Self> {
        std::fs::create_dir_all(path)
            .map_err(|e| Error::Engine(format!("cannot create {}: {e}", path.display())))?;

        let budget = Budget::new(cache_bytes);
        let cache = Cache::new_lru_cache(budget.total);
        // Memtables are charged to the block cache (as reservations), so the cache gives way
        // while they grow and the two together stay within one budget. Writers are never
        // stalled: past the limit RocksDB flushes the largest memtable instead.
        let write_buffers =
            WriteBufferManager::new_write_buffer_manager_with_cache(budget.memtables, false, cache.clone());
        let mut block = BlockBasedOptions::default();
        block.set_block_cache(&cache);
        block.set_bloom_filter(10.0, false);
        // Index and filter blocks live in (and are limited by) the cache too, instead of in
        // table readers that grow with the number of files; L0's stay pinned because every
        // read consults them, and they are evicted last.
        block.set_cache_index_and_filter_blocks(true);
        block.set_cache_index_and_filter_blocks_with_high_priority(true);
        block.set_pin_l0_filter_and_index_blocks_in_cache(true);

        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&block);
        cf_opts.set_compression_type(DBCompressionType::Lz4);
        cf_opts.set_bottommost_compression_type(DBCompressionType::Zstd);
        cf_opts.set_write_buffer_size(budget.write_buffer);
        cf_opts.set_max_write_buffer_number(2);
        // Arena blocks are what a memtable allocates at a time; every table written to holds at
        // least one, so small blocks keep the many quiet tables cheap.
        cf_opts.set_arena_block_size(budget.arena_block);
        cf_opts.set_write_buffer_manager(&write_buffers);

        let mut db_opts = cf_opts.clone();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        db_opts.set_keep_log_file_num(4);
        // A quiet table's memtable would otherwise keep every WAL file since its last write
        // alive; past this size RocksDB flushes it so old logs can go (and recovery stays short).
        db_opts.set_max_total_wal_size(budget.memtables as u64 * 2);
        // Counters only (no timers): what the block cache hit rate is computed from, at the
        // cost of a thread-local increment per lookup.
        db_opts.enable_statistics();
        db_opts.set_statistics_level(StatsLevel::ExceptTimers);

        let mut names: Vec<String> = column_families.iter().map(|s| (*s).to_owned()).collect();
        if let Ok(existing) = rocksdb::DB::list_cf(&db_opts, path) {
            for name in existing {
                if name != "default" && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let column_families = names.clone();
        let descriptors = names.into_iter().map(|name| ColumnFamilyDescriptor::new(name, cf_opts.clone()));
        let db = rocksdb::DB::open_cf_descriptors(&db_opts, path, descriptors).map_err(engine_err)?;
        Ok(Self { db, options: db_opts, column_families })
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily> {
        self.db.cf_handle(name).ok_or(Error::UnknownTable(name))
    }
}

impl KvEngine for RocksEngine {
    fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(cf)?, key).map_err(engine_err)
    }

    fn write(&self, ops: Vec<WriteOp>, sync: bool) -> Result<()> {
        let mut batch = WriteBatch::default();
        for op in ops {
            match op {
                WriteOp::Put { cf, key, value } => batch.put_cf(self.cf(cf)?, key, value),
                WriteOp::Delete { cf, key } => batch.delete_cf(self.cf(cf)?, key),
                // One process owns this engine: it reserves no positions.
                WriteOp::ClaimPosition { .. } => {}
            }
        }
        let mut opts = WriteOptions::default();
        // A synced write returns only after the WAL is on stable storage; RocksDB groups
        // concurrent synced writers into one fsync, so throughput comes from concurrency.
        opts.set_sync(sync);
        self.db.write_opt(batch, &opts).map_err(engine_err)
    }

    fn range(
        &self,
        cf: &'static str,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Result<RawIter<'_>> {
        let handle = self.cf(cf)?;
        let mut opts = ReadOptions::default();
        // RocksDB bounds are lower-inclusive and upper-exclusive; the other bound kinds are
        // handled by seeking and filtering below.
        if let Bound::Included(l) = &lower {
            opts.set_iterate_lower_bound(l.clone());
        }
        if let Bound::Excluded(u) = &upper {
            opts.set_iterate_upper_bound(u.clone());
        }
        let mode = if reverse {
            match &upper {
                Bound::Included(u) => IteratorMode::From(u, Direction::Reverse),
                Bound::Excluded(_) | Bound::Unbounded => IteratorMode::End,
            }
        } else {
            match &lower {
                Bound::Included(l) | Bound::Excluded(l) => IteratorMode::From(l, Direction::Forward),
                Bound::Unbounded => IteratorMode::Start,
            }
        };
        let iter = self.db.iterator_cf_opt(handle, opts, mode);
        let above = move |k: &Vec<u8>| match &lower {
            Bound::Excluded(l) => k > l,
            Bound::Included(l) => k >= l,
            Bound::Unbounded => true,
        };
        let below = move |k: &Vec<u8>| match &upper {
            Bound::Included(u) => k <= u,
            Bound::Excluded(u) => k < u,
            Bound::Unbounded => true,
        };
        let iter = iter.map(|item| item.map(|(k, v)| (k.into_vec(), v.into_vec())).map_err(engine_err));
        // Keys arrive in order, so the near bound is skipped past and the far bound ends the scan.
        let iter: RawIter<'_> = if reverse {
            Box::new(
                iter.skip_while(move |item| item.as_ref().is_ok_and(|(k, _)| !below(k)))
                    .take_while(move |item| item.as_ref().map_or(true, |(k, _)| above(k))),
            )
        } else {
            Box::new(
                iter.skip_while(move |item| item.as_ref().is_ok_and(|(k, _)| !above(k)))
                    .take_while(move |item| item.as_ref().map_or(true, |(k, _)| below(k))),
            )
        };
        Ok(iter)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(engine_err)?;
        self.db.flush().map_err(engine_err)
    }

    fn stats(&self) -> Vec<(&'static str, u64)> {
        // Per column family, summed: SST size and compaction debt are kept per family.
        let summed = |property: &str| -> u64 {
            self.column_families
                .iter()
                .filter_map(|name| self.db.cf_handle(name))
                .filter_map(|cf| self.db.property_int_value_cf(&cf, property).ok().flatten())
                .sum()
        };
        let whole = |property: &str| self.db.property_int_value(property).ok().flatten().unwrap_or(0);
        vec![
            ("sst_files_bytes", summed("rocksdb.total-sst-files-size")),
            ("pending_compaction_bytes", summed("rocksdb.estimate-pending-compaction-bytes")),
            ("running_compactions", whole("rocksdb.num-running-compactions")),
            ("memtable_bytes", summed("rocksdb.cur-size-all-mem-tables")),
            ("block_cache_usage_bytes", whole("rocksdb.block-cache-usage")),
            ("block_cache_capacity_bytes", whole("rocksdb.block-cache-capacity")),
            ("block_cache_hits", self.options.get_ticker_count(Ticker::BlockCacheHit)),
            ("block_cache_misses", self.options.get_ticker_count(Ticker::BlockCacheMiss)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_splits_into_cache_and_memtables() {
        let b = Budget::new(256 * MIB);
        assert_eq!(
            (b.total, b.memtables, b.write_buffer, b.arena_block),
            (256 * MIB, 64 * MIB, 8 * MIB, 512 * 1024)
        );
        let small = Budget::new(0);
        assert_eq!(small.total, 16 * MIB);
        assert!(small.write_buffer >= MIB && small.arena_block >= 64 * 1024);
    }
}
