//! [`Db`]: typed access to the catalog's tables, atomic batches, the schema version and migrations.
//!
//! Every call here blocks on the engine; async callers hand write-heavy work to a blocking thread.

use std::{
    marker::PhantomData,
    ops::Bound,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};

use crate::{
    Error, Result,
    codec::{DecodeError, HasPrefix, KeyCodec, ValueCodec},
    engine::{KvEngine, WriteOp, memory::MemEngine, prefix_successor},
    error::hex,
    schema::{ALL_TABLES, Meta, Table},
};

/// The longest key any table stores, on every engine alike: PostgreSQL's btree cannot index an
/// entry over about 2.7 KB, and no identifier Matrix defines comes near this (IDs and event
/// types are at most 255 bytes).
pub const MAX_KEY_BYTES: usize = 2048;

/// The schema version this build writes. Bump it together with a new entry in [`MIGRATIONS`].
pub const SCHEMA_VERSION: u64 = 1;

/// A migration brings a database from `version - 1` to `version`.
struct Migration {
    version: u64,
    run: fn(&Db) -> Result<()>,
}

/// Ordered by version. Version 1 is the first schema, so there is nothing to migrate yet; the
/// hook runs every step above the stored version, in order, each recorded as it completes.
const MIGRATIONS: &[Migration] = &[];

const SCHEMA_VERSION_KEY: &str = "schema_version";

/// `[storage]` in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Which engine holds the tables.
    pub backend: Backend,
    /// Directory of the RocksDB database (and, whatever the backend, the default home of
    /// media files).
    pub path: PathBuf,
    /// With `backend = "postgres"`: the database, as a libpq connection string or URL
    /// (`postgresql://user:password@host:port/dbname`).
    pub postgres_url: Option<String>,
    /// With `backend = "postgres"`: connections this process keeps open.
    pub postgres_connections: usize,
    /// fsync every acknowledged write (survives power loss, not only a crash).
    pub sync_writes: bool,
    /// RocksDB's memory budget in MiB: the block cache shared by all column families, which
    /// the memtables are charged to.
    pub cache_mb: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Rocksdb,
            path: PathBuf::from("./data"),
            postgres_url: None,
            postgres_connections: 8,
            sync_writes: true,
            cache_mb: 256,
        }
    }
}

/// `storage.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Embedded, one process: the default.
    Rocksdb,
    /// A PostgreSQL database, which several processes may share.
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Box<dyn KvEngine>,
    sync_writes: bool,
    /// Serializes read-modify-write of counters.
    counters: Mutex<()>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("sync_writes", &self.inner.sync_writes).finish_non_exhaustive()
    }
}

impl Db {
    /// Opens the RocksDB database the config names, creating it on first start.
    #[cfg(feature = "rocksdb")]
    pub fn open(config: &StorageConfig) -> Result<Self> {
        let engine: Box<dyn KvEngine> = match config.backend {
            Backend::Rocksdb => Box::new(crate::engine::rocks::RocksEngine::open(
                &config.path,
                ALL_TABLES,
                config.cache_mb.saturating_mul(1024 * 1024),
            )?),
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                let url = config.postgres_url.as_deref().ok_or_else(|| {
                    Error::Engine("storage.backend = \"postgres\" needs storage.postgres_url".to_owned())
                })?;
                Box::new(crate::engine::postgres::PostgresEngine::open(
                    url,
                    ALL_TABLES,
                    config.postgres_connections,
                )?)
            }
            #[cfg(not(feature = "postgres"))]
            Backend::Postgres => {
                return Err(Error::Engine("this build has no PostgreSQL backend".to_owned()));
            }
        };
        Self::from_engine(engine, config.sync_writes)
    }

    /// A fresh database in memory, for tests.
    pub fn in_memory() -> Self {
        Self::from_engine(Box::new(MemEngine::new(ALL_TABLES)), false)
            .expect("a fresh in-memory database needs no migration")
    }

    pub fn from_engine(engine: Box<dyn KvEngine>, sync_writes: bool) -> Result<Self> {
        let db = Self { inner: Arc::new(Inner { engine, sync_writes, counters: Mutex::new(()) }) };
        db.migrate(SCHEMA_VERSION, MIGRATIONS)?;
        Ok(db)
    }

    fn migrate(&self, target: u64, migrations: &[Migration]) -> Result<()> {
        let found = self.get::<Meta>(&SCHEMA_VERSION_KEY.to_owned())?;
        let Some(mut version) = found else {
            // A new database starts at the current schema.
            return self.put::<Meta>(&SCHEMA_VERSION_KEY.to_owned(), &target);
        };
        if version > target {
            return Err(Error::SchemaTooNew { found: version, supported: target });
        }
        let start = version;
        for migration in migrations.iter().filter(|m| m.version > start && m.version <= target) {
            tracing::info!(from = version, to = migration.version, "migrating database schema");
            (migration.run)(self)?;
            self.put::<Meta>(&SCHEMA_VERSION_KEY.to_owned(), &migration.version)?;
            version = migration.version;
        }
        if version != target {
            return Err(Error::Migration { version: target, reason: "no migration step".into() });
        }
        Ok(())
    }

    pub fn schema_version(&self) -> Result<u64> {
        Ok(self.get::<Meta>(&SCHEMA_VERSION_KEY.to_owned())?.unwrap_or(0))
    }

    pub fn get<T: Table>(&self, key: &T::Key) -> Result<Option<T::Value>> {
        let key_bytes = key.to_key_bytes();
        match self.inner.engine.get(T::CF, &key_bytes)? {
            Some(bytes) => decode_value::<T>(&key_bytes, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// [`Db::get`] for readers that skip a record they cannot decode: it is logged (table and
    /// key) and read as absent. Engine errors stay errors.
    pub fn get_lenient<T: Table>(&self, key: &T::Key) -> Result<Option<T::Value>> {
        match self.get::<T>(key) {
            Err(error) if error.is_value_decode() => {
                tracing::error!(%error, "skipping a stored record that cannot be decoded");
                Ok(None)
            }
            other => other,
        }
    }

    pub fn contains<T: Table>(&self, key: &T::Key) -> Result<bool> {
        Ok(self.inner.engine.get(T::CF, &key.to_key_bytes())?.is_some())
    }

    pub fn put<T: Table>(&self, key: &T::Key, value: &T::Value) -> Result<()> {
        let mut batch = Batch::new();
        batch.put::<T>(key, value)?;
        self.write(batch)
    }

    pub fn delete<T: Table>(&self, key: &T::Key) -> Result<()> {
        let mut batch = Batch::new();
        batch.delete::<T>(key);
        self.write(batch)
    }

    /// Applies every write in `batch` atomically; durable on return when `sync_writes` is on.
    pub fn write(&self, batch: Batch) -> Result<()> {
        if batch.ops.is_empty() {
            return Ok(());
        }
        self.inner.engine.write(batch.ops, self.inner.sync_writes)
    }

    /// All entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix<T, P>(&self, prefix: &P) -> Result<TableIter<'_, T>>
    where
        T: Table,
        T::Key: HasPrefix<P>,
        P: KeyCodec,
    {
        self.scan_prefix_dir::<T, P>(prefix, Direction::Forward)
    }

    pub fn scan_prefix_dir<T, P>(&self, prefix: &P, direction: Direction) -> Result<TableIter<'_, T>>
    where
        T: Table,
        T::Key: HasPrefix<P>,
        P: KeyCodec,
    {
        let lower = prefix.to_key_bytes();
        let upper = prefix_successor(&lower).map_or(Bound::Unbounded, Bound::Excluded);
        self.raw_range::<T>(Bound::Included(lower), upper, direction)
    }

    /// Every entry of a table, in key order.
    pub fn scan_prefix_all<T: Table>(&self) -> Result<TableIter<'_, T>> {
        self.raw_range::<T>(Bound::Unbounded, Bound::Unbounded, Direction::Forward)
    }

    /// Entries with keys between `from` and `to`.
    pub fn range<T: Table>(
        &self,
        from: Bound<&T::Key>,
        to: Bound<&T::Key>,
        direction: Direction,
    ) -> Result<TableIter<'_, T>> {
        let enc = |b: Bound<&T::Key>| b.map(KeyCodec::to_key_bytes);
        self.raw_range::<T>(enc(from), enc(to), direction)
    }

    fn raw_range<T: Table>(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        direction: Direction,
    ) -> Result<TableIter<'_, T>> {
        let raw = self.inner.engine.range(T::CF, lower, upper, direction == Direction::Backward)?;
        Ok(TableIter { raw, _table: PhantomData })
    }

    /// Agreement with the other processes on this store, when it is shared.
    pub fn shared(&self) -> Option<&dyn crate::engine::Shared> {
        self.inner.engine.shared()
    }

    /// On a shared store, waits for the lock of `kind` on `key` against every process; on a
    /// store one process owns, `None` at once (the caller's own lock is the whole truth).
    pub fn shared_lock(
        &self,
        kind: crate::engine::LockKind,
        key: &str,
    ) -> Result<Option<Box<dyn crate::engine::LockGuard>>> {
        self.shared().map(|store| store.lock(kind, key)).transpose()
    }

    /// Atomically increments the named counter and returns its new value (the first is 1).
    pub fn next_id(&self, counter: &str) -> Result<u64> {
        if let Some(shared) = self.shared() {
            // The counter lives in the store's own table; one kept here before (by a single
            // process on this database) is where it goes on from.
            let floor = self.get::<Meta>(&format!("counter:{counter}"))?.unwrap_or(0);
            return shared.increment(counter, floor);
        }
        let _guard = self.inner.counters.lock().map_err(|_| Error::Engine("counter lock poisoned".into()))?;
        let key = format!("counter:{counter}");
        let next = self.get::<Meta>(&key)?.unwrap_or(0) + 1;
        self.put::<Meta>(&key, &next)?;
        Ok(next)
    }

    /// Makes everything written so far durable, for a clean shutdown.
    /// The engine's numbers for monitoring.
    pub fn engine_stats(&self) -> Vec<(&'static str, u64)> {
        self.inner.engine.stats()
    }

    pub fn flush(&self) -> Result<()> {
        self.inner.engine.flush()
    }
}

fn decode_value<T: Table>(key: &[u8], bytes: &[u8]) -> Result<T::Value> {
    T::Value::decode_value(bytes).map_err(|e| Error::ValueDecode {
        table: T::CF,
        key_hex: hex(key),
        reason: e.0,
    })
}

/// Typed entries of one table.
pub struct TableIter<'a, T: Table> {
    raw: crate::engine::RawIter<'a>,
    _table: PhantomData<T>,
}

impl<'a, T: Table> TableIter<'a, T> {
    /// The entries with each value that cannot be decoded logged (table and key) and given as
    /// `None`, so a reader can skip it, or delete it, instead of failing as a whole. Engine and
    /// key errors stay errors.
    pub fn lenient(self) -> impl Iterator<Item = Result<(T::Key, Option<T::Value>)>> + 'a {
        let TableIter { raw, .. } = self;
        raw.map(|item| {
            let (k, v) = item?;
            let key = T::Key::from_key_bytes(&k).map_err(|e| Error::KeyDecode {
                table: T::CF,
                key_hex: hex(&k),
                reason: e.0,
            })?;
            match decode_value::<T>(&k, &v) {
                Ok(value) => Ok((key, Some(value))),
                Err(error) => {
                    tracing::error!(%error, "skipping a stored record that cannot be decoded");
                    Ok((key, None))
                }
            }
        })
    }
}

impl<T: Table> Iterator for TableIter<'_, T> {
    type Item = Result<(T::Key, T::Value)>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.raw.next()?;
        Some(item.and_then(|(k, v)| {
            let key = T::Key::from_key_bytes(&k).map_err(|e| Error::KeyDecode {
                table: T::CF,
                key_hex: hex(&k),
                reason: e.0,
            })?;
            Ok((key, decode_value::<T>(&k, &v)?))
        }))
    }
}

/// Writes that land together or not at all.
#[derive(Debug, Default)]
pub struct Batch {
    ops: Vec<WriteOp>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put<T: Table>(&mut self, key: &T::Key, value: &T::Value) -> Result<()> {
        let value = value.encode_value().map_err(Error::ValueEncode)?;
        let key = key.to_key_bytes();
        if key.len() > MAX_KEY_BYTES {
            return Err(Error::KeyTooLong { table: T::CF, len: key.len(), max: MAX_KEY_BYTES });
        }
        self.ops.push(WriteOp::Put { cf: T::CF, key, value });
        Ok(())
    }

    pub fn delete<T: Table>(&mut self, key: &T::Key) {
        self.ops.push(WriteOp::Delete { cf: T::CF, key: key.to_key_bytes() });
    }

    /// Logs the stream entry at `pos`, a position the writer reserved, and claims it: on an
    /// engine several processes share, the batch lands only while the reservation holds.
    pub fn stream_entry(&mut self, pos: u64, entry: &crate::records::StreamEntry) -> Result<()> {
        self.put::<crate::schema::StreamLog>(&pos, entry)?;
        self.ops.push(WriteOp::ClaimPosition { pos });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The keys of `T` this batch puts or deletes, so that a cache over `T` can follow the
    /// write. An `Err` is a key that does not decode: the cache cannot tell what it covers.
    pub fn keys<T: Table>(&self) -> impl Iterator<Item = std::result::Result<T::Key, DecodeError>> + '_ {
        self.ops.iter().filter_map(|op| {
            let (WriteOp::Put { cf, key, .. } | WriteOp::Delete { cf, key }) = op else { return None };
            (*cf == T::CF).then(|| T::Key::from_key_bytes(key))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

#[cfg(test)]
mod tests;
