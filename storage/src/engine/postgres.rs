//! The PostgreSQL engine: one table per column family, `kv_<name>` with a `bytea` key as its
//! primary key and a `bytea` value. PostgreSQL orders `bytea` byte by byte, a prefix before
//! its extensions, as RocksDB's default comparator does, so ranges come back in the order the
//! key codec is built for.
//!
//! The `postgres` client blocks on a runtime of its own, which cannot run inside another
//! runtime's thread: each connection lives on a thread of its own, and a caller (an async
//! task among them, as with RocksDB's reads) hands a job to the pool and waits for its answer.
//! A range is read a page at a time, each page one query after the last key seen; unlike a
//! RocksDB iterator it is not one snapshot, so a write that commits between two pages shows in
//! the later one (as it would to a reader that started after it).

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, Hasher},
    ops::Bound,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, PoisonError, Weak, mpsc},
};

use postgres::{Client, NoTls, Statement};

use super::{KvEngine, LockGuard, LockKind, RawIter, Shared, WriteOp};
use crate::{Error, Result};

/// The tables several processes agree through, beside the catalog's `kv_*` tables: counters,
/// the head of the global stream, the positions reserved and not yet claimed with the process
/// that holds each, and when each process last said it was alive.
const SHARED_DDL: &str = "\
    CREATE TABLE IF NOT EXISTS hearth_counters (name text PRIMARY KEY, value bigint NOT NULL);\
    CREATE TABLE IF NOT EXISTS hearth_stream_head (id int PRIMARY KEY, head bigint NOT NULL);\
    CREATE TABLE IF NOT EXISTS hearth_stream_reserved \
        (pos bigint PRIMARY KEY, node int NOT NULL, at timestamptz NOT NULL DEFAULT now());\
    CREATE TABLE IF NOT EXISTS hearth_nodes (node int PRIMARY KEY, seen timestamptz NOT NULL);";

/// Advisory lock classes (the first of the two-key form): one key space per kind of lock.
const CLASS_DDL: i32 = 0x4854_0000;
const CLASS_ROOM: i32 = 0x4854_0002;
const CLASS_CREATE: i32 = 0x4854_0003;
const CLASS_QUEUES: i32 = 0x4854_0004;

/// How long a lock is waited for before the request fails instead of hanging.
const LOCK_TIMEOUT: &str = "30s";

/// Reservations younger than this are never swept: their writer may still be at work.
const SWEEP_AFTER: &str = "5 seconds";

/// A process not heard from for this long (each says it is alive at every sweep, about once a
/// second) is taken for dead, and its reservations are swept. One that only stalled finds its
/// writes refused (their positions are gone), never landing below what readers have passed.
const DEAD_AFTER: &str = "10 seconds";

/// Rows per query of a range.
const PAGE: i64 = 256;

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

pub struct PostgresEngine {
    jobs: mpsc::Sender<Job>,
    tables: Vec<&'static str>,
    locks: Arc<Locks>,
    /// This process among those on the database (random).
    node: i32,
}

impl std::fmt::Debug for PostgresEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresEngine").field("tables", &self.tables.len()).finish_non_exhaustive()
    }
}

fn engine_err(e: &postgres::Error) -> Error {
    // The cause (refused, a database error) is what an operator acts on; it never carries the
    // connection string.
    match std::error::Error::source(e) {
        Some(cause) => Error::Engine(format!("postgres: {e}: {cause}")),
        None => Error::Engine(format!("postgres: {e}")),
    }
}

/// One connection and the statements prepared on it.
struct Conn {
    url: String,
    client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    fn connect(url: &str) -> Result<Self> {
        let mut config: postgres::Config = url.parse().map_err(|e| engine_err(&e))?;
        // An unreachable database fails a connection in seconds instead of the system's
        // minutes, and a silently dead one is noticed by keepalives, unless the URL says
        // otherwise.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        config.keepalives(true).keepalives_idle(std::time::Duration::from_secs(30));
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(std::time::Duration::from_secs(60));
        }
        let client = config.connect(NoTls).map_err(|e| engine_err(&e))?;
        Ok(Self { url: url.to_owned(), client, statements: HashMap::new() })
    }

    /// A lost connection is opened again, not left failing every request.
    fn reopen(&mut self) -> Result<()> {
        tracing::warn!("postgres connection lost; reconnecting");
        *self = Self::connect(&self.url)?;
        Ok(())
    }

    /// Whether the connection still answers (asked only after a request failed).
    fn alive(&mut self) -> bool {
        !self.client.is_closed() && self.client.is_valid(std::time::Duration::from_secs(5)).is_ok()
    }

    fn prepared(&mut self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).map_err(|e| engine_err(&e))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

fn table(cf: &str) -> String {
    format!("kv_{cf}")
}

/// The page query for one shape of bounds; the parameters are the bounds present, lower first.
fn range_sql(cf: &str, lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>, reverse: bool) -> String {
    let mut conditions = Vec::new();
    let mut n = 0;
    for (bound, inclusive, exclusive) in [(lower, ">=", ">"), (upper, "<=", "<")] {
        let op = match bound {
            Bound::Included(_) => inclusive,
            Bound::Excluded(_) => exclusive,
            Bound::Unbounded => continue,
        };
        n += 1;
        conditions.push(format!("k {op} ${n}"));
    }
    let filter =
        if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
    let order = if reverse { "DESC" } else { "ASC" };
    format!("SELECT k, v FROM {}{filter} ORDER BY k {order} LIMIT {PAGE}", table(cf))
}

impl PostgresEngine {
    /// Connects `connections` times to `url` and creates the tables that are missing.
    pub fn open(url: &str, tables: &[&'static str], connections: usize) -> Result<Self> {
        for cf in tables {
            if !cf.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
                return Err(Error::Engine(format!("table name {cf} is not a PostgreSQL identifier")));
            }
        }
        // Processes starting together would race to create the same tables.
        let mut ddl = format!("BEGIN; SELECT pg_advisory_xact_lock({CLASS_DDL}, 0);{SHARED_DDL}");
        for cf in tables {
            ddl.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS {} (k bytea PRIMARY KEY, v bytea NOT NULL);",
                table(cf)
            ));
        }
        ddl.push_str("COMMIT;");
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let (ready_tx, ready) = mpsc::channel::<Result<()>>();
        let connections = connections.max(1);
        for i in 0..connections {
            let (url, queue, ready) = (url.to_owned(), queue.clone(), ready_tx.clone());
            // The first connection creates what is missing before any request can come.
            let ddl = (i == 0).then(|| ddl.clone());
            std::thread::Builder::new()
                .name(format!("postgres-{i}"))
                .spawn(move || {
                    // Connected here, not by the caller: the client may not start its runtime
                    // on a thread that drives another.
                    let opened = Conn::connect(&url).and_then(|mut conn| {
                        if let Some(ddl) = ddl {
                            conn.client.batch_execute(&ddl).map_err(|e| engine_err(&e))?;
                        }
                        Ok(conn)
                    });
                    let mut conn = match opened {
                        Ok(conn) => {
                            let _ = ready.send(Ok(()));
                            conn
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    drop(ready);
                    loop {
                        // The lock is held only to take a job, never while running one.
                        let job = match queue.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A job that panics fails its own request (its answer channel drops),
                        // not the connection's thread.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
                    }
                })
                .map_err(|e| Error::Engine(format!("starting a postgres worker: {e}")))?;
        }
        drop(ready_tx);
        for _ in 0..connections {
            // On an error the workers end once `jobs` is dropped with this function's return.
            ready
                .recv()
                .map_err(|_| Error::Engine("a postgres worker ended while connecting".to_owned()))??;
        }
        let locks = Arc::new(Locks {
            url: url.to_owned(),
            pool: Mutex::default(),
            freed: std::sync::Condvar::new(),
            max: connections.max(4),
        });
        let node = i32::from_ne_bytes(random_u64().to_ne_bytes()[..4].try_into().unwrap_or_default());
        let engine = Self { jobs, tables: tables.to_vec(), locks, node };
        engine.heartbeat()?;
        Ok(engine)
    }

    /// Runs `f` on a pooled connection and waits for its answer.
    fn run<T: Send + 'static>(&self, f: impl Fn(&mut Conn) -> Result<T> + Send + 'static) -> Result<T> {
        self.run_with(true, f)
    }

    /// [`Self::run`], saying whether `f` may run a second time after a lost connection.
    fn run_with<T: Send + 'static>(
        &self,
        idempotent: bool,
        f: impl Fn(&mut Conn) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn| {
            let mut answer = f(conn);
            // A request that met a connection the server closed (a restart, a failover) runs
            // again once on a new one when that is safe: reads, and batches of puts and deletes,
            // which write the same whether or not a first try committed. Not a batch that
            // claims a position, nor a reservation: a first try that committed would make the
            // second fail, or reserve twice.
            if answer.is_err() && !conn.alive() {
                answer = conn.reopen().and_then(|()| if idempotent { f(conn) } else { answer_lost() });
            }
            let _ = tx.send(answer);
        });
        self.jobs.send(job).map_err(|_| Error::Engine("postgres workers have stopped".to_owned()))?;
        rx.recv().map_err(|_| Error::Engine("postgres request failed inside its worker".to_owned()))?
    }

    /// Records that this process is alive.
    fn heartbeat(&self) -> Result<()> {
        let node = self.node;
        self.run(move |conn| {
            let statement = conn.prepared(
                "INSERT INTO hearth_nodes (node, seen) VALUES ($1, now()) \
                 ON CONFLICT (node) DO UPDATE SET seen = now()",
            )?;
            conn.client.execute(&statement, &[&node]).map_err(|e| engine_err(&e))?;
            Ok(())
        })
    }

    fn check(&self, cf: &'static str) -> Result<()> {
        if self.tables.contains(&cf) { Ok(()) } else { Err(Error::UnknownTable(cf)) }
    }

    fn page(
        &self,
        cf: &'static str,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.run(move |conn| {
            let statement = conn.prepared(&range_sql(cf, &lower, &upper, reverse))?;
            let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = Vec::new();
            for bound in [&lower, &upper] {
                if let Bound::Included(k) | Bound::Excluded(k) = bound {
                    params.push(k);
                }
            }
            let rows = conn.client.query(&statement, &params).map_err(|e| engine_err(&e))?;
            Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
        })
    }
}

impl KvEngine for PostgresEngine {
    fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check(cf)?;
        let key = key.to_vec();
        self.run(move |conn| {
            let statement = conn.prepared(&format!("SELECT v FROM {} WHERE k = $1", table(cf)))?;
            let row = conn.client.query_opt(&statement, &[&key]).map_err(|e| engine_err(&e))?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn write(&self, ops: Vec<WriteOp>, sync: bool) -> Result<()> {
        for op in &ops {
            match op {
                WriteOp::Put { cf, .. } | WriteOp::Delete { cf, .. } => self.check(cf)?,
                WriteOp::ClaimPosition { .. } => {}
            }
        }
        let idempotent = !ops.iter().any(|op| matches!(op, WriteOp::ClaimPosition { .. }));
        self.run_with(idempotent, move |conn| {
            let mut statements = Vec::with_capacity(ops.len());
            for op in &ops {
                let sql = match op {
                    WriteOp::Put { cf, .. } => format!(
                        "INSERT INTO {} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                        table(cf)
                    ),
                    WriteOp::Delete { cf, .. } => format!("DELETE FROM {} WHERE k = $1", table(cf)),
                    WriteOp::ClaimPosition { .. } => {
                        "DELETE FROM hearth_stream_reserved WHERE pos = $1".to_owned()
                    }
                };
                statements.push(conn.prepared(&sql)?);
            }
            let mut tx = conn.client.transaction().map_err(|e| engine_err(&e))?;
            // Without sync, not waiting for the WAL flush, as RocksDB without fsync: a crash of
            // the database server may lose the last commits, never half of one. With it, on
            // whatever the server's own default says.
            let commit = if sync { "on" } else { "off" };
            tx.batch_execute(&format!("SET LOCAL synchronous_commit = {commit}"))
                .map_err(|e| engine_err(&e))?;
            for (op, statement) in ops.iter().zip(&statements) {
                match op {
                    WriteOp::Put { key, value, .. } => tx.execute(statement, &[key, value]),
                    WriteOp::Delete { key, .. } => tx.execute(statement, &[key]),
                    WriteOp::ClaimPosition { pos } => {
                        let claimed = tx.execute(statement, &[&to_i64(*pos)?]).map_err(|e| engine_err(&e))?;
                        if claimed != 1 {
                            // Dropping the transaction rolls it back: nothing of the batch lands
                            // at a position readers may already have passed.
                            return Err(Error::Engine(format!(
                                "stream position {pos} is no longer reserved"
                            )));
                        }
                        continue;
                    }
                }
                .map_err(|e| engine_err(&e))?;
            }
            tx.commit().map_err(|e| engine_err(&e))
        })
    }

    fn range(
        &self,
        cf: &'static str,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Result<RawIter<'_>> {
        self.check(cf)?;
        Ok(Box::new(Pages { engine: self, cf, lower, upper, reverse, buffer: VecDeque::new(), done: false }))
    }

    fn flush(&self) -> Result<()> {
        // A committed transaction is durable (or, without sync, as durable as asked).
        Ok(())
    }

    fn shared(&self) -> Option<&dyn Shared> {
        Some(self)
    }
}

fn answer_lost<T>() -> Result<T> {
    Err(Error::Engine(
        "the postgres connection was lost before the answer; the write may have landed".to_owned(),
    ))
}

fn to_i64(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::Engine(format!("{n} is out of PostgreSQL's bigint range")))
}

fn to_u64(n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| Error::Engine(format!("negative counter {n} in the database")))
}

/// A random number without a dependency: the standard library seeds each `RandomState` with
/// fresh randomness.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(u64::from(std::process::id()));
    hasher.finish()
}

/// The advisory lock key of a name: FNV-1a, the same in every process and build (a
/// collision only makes two names share a lock).
fn lock_key(name: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(hash.to_ne_bytes())
}

impl Shared for PostgresEngine {
    fn increment(&self, counter: &str, floor: u64) -> Result<u64> {
        let (counter, floor) = (counter.to_owned(), to_i64(floor)?);
        let value = self.run(move |conn| {
            let statement = conn.prepared(
                "INSERT INTO hearth_counters (name, value) VALUES ($1, $2::bigint + 1) ON CONFLICT (name) \
                 DO UPDATE SET value = GREATEST(hearth_counters.value, $2::bigint) + 1 RETURNING value",
            )?;
            let row = conn.client.query_one(&statement, &[&counter, &floor]).map_err(|e| engine_err(&e))?;
            Ok(row.get::<_, i64>(0))
        })?;
        to_u64(value)
    }

    fn reserve_position(&self, floor: u64) -> Result<u64> {
        let (floor, node) = (to_i64(floor)?, self.node);
        // One statement, so the new head and its reservation become visible together: a
        // watermark read never sees the head past a position without seeing it reserved.
        let pos = self.run_with(false, move |conn| {
            let statement = conn.prepared(
                "WITH head AS (INSERT INTO hearth_stream_head (id, head) VALUES (1, $1::bigint + 1) \
                 ON CONFLICT (id) DO UPDATE SET head = GREATEST(hearth_stream_head.head, $1::bigint) + 1 \
                 RETURNING head) \
                 INSERT INTO hearth_stream_reserved (pos, node) SELECT head, $2::int FROM head RETURNING pos",
            )?;
            let row = conn.client.query_one(&statement, &[&floor, &node]).map_err(|e| engine_err(&e))?;
            Ok(row.get::<_, i64>(0))
        })?;
        to_u64(pos)
    }

    fn release_position(&self, pos: u64) -> Result<()> {
        let pos = to_i64(pos)?;
        self.run(move |conn| {
            let statement = conn.prepared("DELETE FROM hearth_stream_reserved WHERE pos = $1")?;
            conn.client.execute(&statement, &[&pos]).map_err(|e| engine_err(&e))?;
            Ok(())
        })
    }

    fn watermark(&self) -> Result<Option<u64>> {
        let (lowest, head) = self.run(|conn| {
            // One statement is one snapshot: the lowest reservation and the head agree.
            let statement = conn.prepared(
                "SELECT (SELECT min(pos) FROM hearth_stream_reserved), \
                 (SELECT head FROM hearth_stream_head WHERE id = 1)",
            )?;
            let row = conn.client.query_one(&statement, &[]).map_err(|e| engine_err(&e))?;
            Ok((row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)))
        })?;
        match (lowest, head) {
            (Some(lowest), _) => Ok(Some(to_u64(lowest - 1)?)),
            (None, Some(head)) => Ok(Some(to_u64(head)?)),
            (None, None) => Ok(None),
        }
    }

    fn sweep(&self, mine: &[u64]) -> Result<usize> {
        self.heartbeat()?;
        let mine = mine.iter().map(|p| to_i64(*p)).collect::<Result<Vec<i64>>>()?;
        let node = self.node;
        self.run(move |conn| {
            let own = conn.prepared(&format!(
                "DELETE FROM hearth_stream_reserved WHERE node = $1 AND at < now() - interval '{SWEEP_AFTER}' \
                 AND NOT (pos = ANY($2))"
            ))?;
            let swept = conn.client.execute(&own, &[&node, &mine]).map_err(|e| engine_err(&e))?;
            let dead = conn.prepared(&format!(
                "DELETE FROM hearth_stream_reserved r WHERE r.node <> $1 \
                 AND r.at < now() - interval '{SWEEP_AFTER}' AND NOT EXISTS (SELECT 1 FROM hearth_nodes n \
                 WHERE n.node = r.node AND n.seen > now() - interval '{DEAD_AFTER}') RETURNING r.node"
            ))?;
            let orphans = conn.client.query(&dead, &[&node]).map_err(|e| engine_err(&e))?;
            if let Some(row) = orphans.first() {
                tracing::warn!(
                    node = row.get::<_, i32>(0),
                    positions = orphans.len(),
                    "released the stream positions of a process that stopped answering"
                );
            }
            let forgotten = conn.prepared("DELETE FROM hearth_nodes WHERE seen < now() - interval '1 day'")?;
            conn.client.execute(&forgotten, &[]).map_err(|e| engine_err(&e))?;
            Ok(usize::try_from(swept).unwrap_or(usize::MAX).saturating_add(orphans.len()))
        })
    }

    fn lock(&self, kind: LockKind, key: &str) -> Result<Box<dyn LockGuard>> {
        let guard = Locks::acquire(&self.locks, class_of(kind), lock_key(key), true)?;
        guard
            .map(|g| Box::new(g) as Box<dyn LockGuard>)
            .ok_or_else(|| Error::Engine("lock not taken".to_owned()))
    }

    fn try_lock(&self, kind: LockKind, key: &str) -> Result<Option<Box<dyn LockGuard>>> {
        let guard = Locks::acquire(&self.locks, class_of(kind), lock_key(key), false)?;
        Ok(guard.map(|g| Box::new(g) as Box<dyn LockGuard>))
    }
}

fn class_of(kind: LockKind) -> i32 {
    match kind {
        LockKind::Room => CLASS_ROOM,
        LockKind::Create => CLASS_CREATE,
        LockKind::Queues => CLASS_QUEUES,
    }
}

/// Connections that hold advisory locks: a session lock lives on the connection that took it,
/// so each held lock keeps one connection (and its thread) until released. Idle ones are kept
/// for the next lock; more are opened when all are busy, up to `max` (as many as the data
/// connections, at least 4), past which a lock waits for a connection as it would for the
/// lock.
struct Locks {
    url: String,
    pool: Mutex<LockPool>,
    freed: std::sync::Condvar,
    max: usize,
}

#[derive(Default)]
struct LockPool {
    idle: Vec<mpsc::Sender<LockJob>>,
    open: usize,
}

struct LockJob {
    class: i32,
    key: i32,
    /// Wait for the lock, or give up at once when it is taken.
    wait: bool,
    acquired: mpsc::SyncSender<Result<bool>>,
    /// Closed (its sender dropped) when the lock is to be released.
    release: mpsc::Receiver<()>,
}

/// A held advisory lock.
pub struct PgLock {
    release: Option<mpsc::Sender<()>>,
    worker: Option<mpsc::Sender<LockJob>>,
    locks: Weak<Locks>,
}

impl LockGuard for PgLock {}

impl Drop for PgLock {
    fn drop(&mut self) {
        drop(self.release.take());
        // The worker unlocks before it takes its next job from the channel.
        if let (Some(worker), Some(locks)) = (self.worker.take(), self.locks.upgrade()) {
            locks.pool.lock().unwrap_or_else(PoisonError::into_inner).idle.push(worker);
            locks.freed.notify_one();
        }
    }
}

impl Locks {
    /// The lock, or `None` when `wait` is false and it is taken.
    fn acquire(locks: &Arc<Self>, class: i32, key: i32, wait: bool) -> Result<Option<PgLock>> {
        let worker = Self::worker(locks)?;
        let (acquired, answer) = mpsc::sync_channel(1);
        let (release, released) = mpsc::channel();
        let job = LockJob { class, key, wait, acquired, release: released };
        if worker.send(job).is_err() {
            // Its thread ended (it could not connect again); the next lock opens another.
            locks.pool.lock().unwrap_or_else(PoisonError::into_inner).open -= 1;
            return Err(Error::Engine("a postgres lock worker has stopped".to_owned()));
        }
        let result = answer
            .recv()
            .map_err(|_| Error::Engine("a postgres lock worker ended while locking".to_owned()))?;
        let guard = PgLock { release: Some(release), worker: Some(worker), locks: Arc::downgrade(locks) };
        // Unless taken, the guard goes back to the pool at once, holding nothing.
        Ok(result?.then_some(guard))
    }

    /// An idle connection, a new one, or, at the cap, the next one released (within 30 s).
    fn worker(locks: &Arc<Self>) -> Result<mpsc::Sender<LockJob>> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut pool = locks.pool.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(worker) = pool.idle.pop() {
                return Ok(worker);
            }
            if pool.open < locks.max {
                pool.open += 1;
                drop(pool);
                let spawned = Self::spawn(&locks.url);
                if spawned.is_err() {
                    locks.pool.lock().unwrap_or_else(PoisonError::into_inner).open -= 1;
                    locks.freed.notify_one();
                }
                return spawned;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Engine("every postgres lock connection stayed busy for 30 s".to_owned()));
            }
            pool = locks.freed.wait_timeout(pool, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn spawn(url: &str) -> Result<mpsc::Sender<LockJob>> {
        let (jobs, queue) = mpsc::channel::<LockJob>();
        let (ready_tx, ready) = mpsc::sync_channel::<Result<()>>(1);
        let url = url.to_owned();
        std::thread::Builder::new()
            .name("postgres-lock".to_owned())
            .spawn(move || {
                let opened = Conn::connect(&url).and_then(|mut conn| {
                    conn.client
                        .batch_execute(&format!("SET lock_timeout = '{LOCK_TIMEOUT}'"))
                        .map_err(|e| engine_err(&e))?;
                    Ok(conn)
                });
                let mut conn = match opened {
                    Ok(conn) => {
                        let _ = ready_tx.send(Ok(()));
                        conn
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Ends when the pool (holding the only sender) is gone.
                while let Ok(job) = queue.recv() {
                    let take = |conn: &mut Conn| -> Result<bool> {
                        if job.wait {
                            conn.client
                                .execute("SELECT pg_advisory_lock($1, $2)", &[&job.class, &job.key])
                                .map_err(|e| engine_err(&e))?;
                            return Ok(true);
                        }
                        let row = conn
                            .client
                            .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&job.class, &job.key])
                            .map_err(|e| engine_err(&e))?;
                        Ok(row.get(0))
                    };
                    let mut locked = take(&mut conn);
                    if locked.is_err() && !conn.alive() {
                        locked = conn.reopen().and_then(|()| {
                            conn.client
                                .batch_execute(&format!("SET lock_timeout = '{LOCK_TIMEOUT}'"))
                                .map_err(|e| engine_err(&e))?;
                            take(&mut conn)
                        });
                    }
                    let ok = matches!(locked, Ok(true));
                    let _ = job.acquired.send(locked);
                    if ok {
                        // Returns once the guard is dropped.
                        let _ = job.release.recv();
                        if let Err(error) =
                            conn.client.execute("SELECT pg_advisory_unlock($1, $2)", &[&job.class, &job.key])
                        {
                            // A lost connection released the lock with its session.
                            tracing::warn!(error = %engine_err(&error), "postgres advisory unlock failed");
                        }
                    }
                }
            })
            .map_err(|e| Error::Engine(format!("starting a postgres lock worker: {e}")))?;
        ready
            .recv()
            .map_err(|_| Error::Engine("a postgres lock worker ended while connecting".to_owned()))??;
        Ok(jobs)
    }
}

/// A range read a page at a time, each page after the last key of the one before.
struct Pages<'a> {
    engine: &'a PostgresEngine,
    cf: &'static str,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    reverse: bool,
    buffer: VecDeque<(Vec<u8>, Vec<u8>)>,
    done: bool,
}

impl Iterator for Pages<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffer.is_empty() && !self.done {
            match self.engine.page(self.cf, self.lower.clone(), self.upper.clone(), self.reverse) {
                Ok(rows) => {
                    self.done = i64::try_from(rows.len()).unwrap_or(i64::MAX) < PAGE;
                    if let Some((last, _)) = rows.last() {
                        let after = Bound::Excluded(last.clone());
                        if self.reverse { self.upper = after } else { self.lower = after }
                    }
                    self.buffer = rows.into();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.buffer.pop_front().map(Ok)
    }
}

/// A throwaway PostgreSQL cluster for tests: `initdb` in a temporary directory, the server on
/// a free loopback port, stopped when dropped. Debian's `postgresql` package provides the
/// programs (`scripts/test` installs it); as root they run as its `postgres` user, since
/// PostgreSQL refuses to run as root.
#[cfg(any(test, feature = "test-cluster"))]
// Test support: a cluster that cannot start is the test's failure, said where it happens.
#[allow(clippy::unwrap_used)]
pub mod test_cluster {
    use std::{
        path::{Path, PathBuf},
        process::Command,
    };

    pub struct TestCluster {
        dir: tempfile::TempDir,
        bin: PathBuf,
        as_postgres: bool,
        pub url: String,
    }

    fn bindir() -> PathBuf {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|dir| dir.filter_map(Result::ok).map(|e| e.path().join("bin")).collect())
            .unwrap_or_default();
        versions.sort();
        versions.into_iter().rev().find(|bin| bin.join("initdb").exists()).unwrap_or_else(|| {
            panic!(
                "PostgreSQL's programs are missing: install Debian's postgresql package (scripts/test does)"
            )
        })
    }

    fn is_root() -> bool {
        Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    }

    impl TestCluster {
        pub fn start() -> Self {
            let bin = bindir();
            let as_postgres = is_root();
            let dir = tempfile::tempdir().unwrap();
            if as_postgres {
                let status = Command::new("chown").arg("postgres:postgres").arg(dir.path()).status().unwrap();
                assert!(status.success(), "chown of the cluster directory to postgres");
            }
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let data = dir.path().join("data");
            let url = format!("host=127.0.0.1 port={port} user=hearth dbname=postgres");
            let cluster = Self { dir, bin, as_postgres, url };
            cluster.run("initdb", &["-D", path(&data), "-U", "hearth", "--auth=trust", "-E", "UTF8", "-N"]);
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                cluster.dir.path().display()
            );
            let log = cluster.dir.path().join("log");
            cluster.run("pg_ctl", &["-D", path(&data), "-o", &options, "-l", path(&log), "-w", "start"]);
            cluster
        }

        fn run(&self, program: &str, args: &[&str]) {
            let program = self.bin.join(program);
            let mut command = if self.as_postgres {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&program);
                c
            } else {
                Command::new(&program)
            };
            let out = command.args(args).output().unwrap();
            assert!(
                out.status.success(),
                "{} {args:?}: {}{}",
                program.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    fn path(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    impl Drop for TestCluster {
        fn drop(&mut self) {
            let data = self.dir.path().join("data");
            if data.exists() {
                self.run("pg_ctl", &["-D", path(&data), "-m", "immediate", "-w", "stop"]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;

    use super::{PostgresEngine, test_cluster::TestCluster};
    use crate::engine::{KvEngine, WriteOp, memory::MemEngine};

    fn collect(
        engine: &dyn KvEngine,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Vec<Vec<u8>> {
        engine.range("t", lower, upper, reverse).unwrap().map(|r| r.unwrap().0).collect()
    }

    #[test]
    fn ranges_over_many_pages_come_back_in_the_memory_engines_order() {
        let cluster = TestCluster::start();
        let postgres = PostgresEngine::open(&cluster.url, &["t", "u"], 2).unwrap();
        let memory = MemEngine::new(&["t", "u"]);
        // Keys that differ in their first, last and middle bytes, prefixes of one another, and
        // the bytes at both ends of the range, spread over several pages.
        let mut ops = Vec::new();
        for i in 0..700u32 {
            let mut key = vec![(i % 7) as u8 * 40, 0x00, 0xFF];
            key.extend_from_slice(&i.to_be_bytes()[2..]);
            if i % 10 == 0 {
                let prefix = key[..3 + (i as usize / 10) % 3].to_vec();
                ops.push(WriteOp::Put { cf: "t", key: prefix, value: Vec::new() });
            }
            ops.push(WriteOp::Put { cf: "t", key, value: i.to_be_bytes().to_vec() });
        }
        ops.push(WriteOp::Put { cf: "t", key: Vec::new(), value: b"empty".to_vec() });
        ops.push(WriteOp::Put { cf: "t", key: vec![0xFF; 4], value: b"last".to_vec() });
        ops.push(WriteOp::Put { cf: "u", key: vec![1], value: b"other table".to_vec() });
        for engine in [&postgres as &dyn KvEngine, &memory] {
            engine.write(ops.iter().map(clone).collect(), true).unwrap();
        }
        let bounds = [
            (Bound::Unbounded, Bound::Unbounded),
            (Bound::Included(vec![40]), Bound::Excluded(vec![200])),
            (Bound::Excluded(vec![40, 0, 0xFF]), Bound::Included(vec![240, 0, 0xFF, 1])),
        ];
        for (lower, upper) in bounds {
            for reverse in [false, true] {
                let want = collect(&memory, lower.clone(), upper.clone(), reverse);
                let got = collect(&postgres, lower.clone(), upper.clone(), reverse);
                assert_eq!(got.len(), want.len(), "{lower:?}..{upper:?} reverse {reverse}");
                assert_eq!(got, want, "{lower:?}..{upper:?} reverse {reverse}");
            }
        }
        assert!(
            collect(&postgres, Bound::Unbounded, Bound::Unbounded, false).len() > 2 * super::PAGE as usize
        );

        // A batch is all or nothing: a statement the database refuses rolls back the rest.
        let mut admin = postgres::Client::connect(&cluster.url, postgres::NoTls).unwrap();
        admin.batch_execute("ALTER TABLE kv_u ADD CONSTRAINT short CHECK (length(v) < 16)").unwrap();
        let failing = vec![
            WriteOp::Put { cf: "t", key: vec![7, 7], value: b"first".to_vec() },
            WriteOp::Put { cf: "u", key: vec![1], value: b"far too long for the check".to_vec() },
        ];
        assert!(postgres.write(failing, false).is_err());
        assert_eq!(postgres.get("t", &[7, 7]).unwrap(), None);
        assert_eq!(postgres.get("u", &[1]).unwrap(), Some(b"other table".to_vec()));
        postgres.write(vec![WriteOp::Delete { cf: "u", key: vec![1] }], false).unwrap();
        assert_eq!(postgres.get("u", &[1]).unwrap(), None);
        assert!(matches!(postgres.get("nope", &[1]), Err(crate::Error::UnknownTable("nope"))));
    }

    fn clone(op: &WriteOp) -> WriteOp {
        match op {
            WriteOp::Put { cf, key, value } => WriteOp::Put { cf, key: key.clone(), value: value.clone() },
            WriteOp::Delete { cf, key } => WriteOp::Delete { cf, key: key.clone() },
            WriteOp::ClaimPosition { pos } => WriteOp::ClaimPosition { pos: *pos },
        }
    }

    fn claimed_write(engine: &PostgresEngine, pos: u64) -> crate::Result<()> {
        let op = WriteOp::Put { cf: "t", key: pos.to_be_bytes().to_vec(), value: vec![1] };
        engine.write(vec![op, WriteOp::ClaimPosition { pos }], false)
    }

    /// Two engines on one database stand for two processes.
    #[test]
    fn processes_on_one_database_agree_on_positions_counters_and_locks() {
        use crate::engine::{LockKind, Shared};
        let cluster = TestCluster::start();
        let a = PostgresEngine::open(&cluster.url, &["t"], 2).unwrap();
        let b = PostgresEngine::open(&cluster.url, &["t"], 2).unwrap();
        assert_eq!(a.watermark().unwrap(), None, "nothing reserved yet");

        // Positions continue above the floor (the last one logged before), whoever reserves.
        let p1 = a.reserve_position(40).unwrap();
        let p2 = b.reserve_position(10).unwrap();
        let p3 = a.reserve_position(0).unwrap();
        assert_eq!((p1, p2, p3), (41, 42, 43));
        assert_eq!(b.watermark().unwrap(), Some(40));
        // Later writers commit first: readers may not pass the earliest reservation.
        claimed_write(&b, p2).unwrap();
        claimed_write(&a, p3).unwrap();
        assert_eq!(a.watermark().unwrap(), Some(40));
        claimed_write(&a, p1).unwrap();
        assert_eq!(b.watermark().unwrap(), Some(43));

        // A released reservation cannot be claimed: the batch writes nothing.
        let p4 = b.reserve_position(0).unwrap();
        b.release_position(p4).unwrap();
        assert!(claimed_write(&b, p4).is_err());
        assert_eq!(b.get("t", &p4.to_be_bytes()).unwrap(), None);
        assert_eq!(a.watermark().unwrap(), Some(p4));

        // Counters: unique across processes, above their floor.
        let mut seen: Vec<u64> =
            (0..5).flat_map(|_| [a.increment("c", 100).unwrap(), b.increment("c", 0).unwrap()]).collect();
        assert_eq!(seen[0], 101);
        seen.dedup();
        assert_eq!(seen, (101..=110).collect::<Vec<_>>());

        // A lock held in one process keeps the other waiting until it is dropped.
        let held = a.lock(LockKind::Room, "!room:x").unwrap();
        let other = a.lock(LockKind::Room, "!other:x").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let guard = b.lock(LockKind::Room, "!room:x").unwrap();
            tx.send(()).unwrap();
            drop(guard);
            b
        });
        assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(), "the lock is held");
        drop(other);
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(),
            "another room's lock is not it"
        );
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the lock passes on once released");
        let b = waiter.join().unwrap();
        // Released locks are taken again at once (the connections go back to their pool).
        drop(a.lock(LockKind::Room, "!room:x").unwrap());
        drop(b.lock(LockKind::Room, "!room:x").unwrap());

        // A process that dies holding a reservation holds the stream back only until it is
        // taken for dead; then the sweep releases it and a late claim of it fails.
        let doomed = PostgresEngine::open(&cluster.url, &["t"], 1).unwrap();
        let orphan = doomed.reserve_position(0).unwrap();
        let mut admin = postgres::Client::connect(&cluster.url, postgres::NoTls).unwrap();
        admin
            .execute(
                "UPDATE hearth_nodes SET seen = now() - interval '1 minute' WHERE node = $1",
                &[&doomed.node],
            )
            .unwrap();
        admin
            .execute(
                "UPDATE hearth_stream_reserved SET at = now() - interval '1 minute' WHERE pos = $1",
                &[&i64::try_from(orphan).unwrap()],
            )
            .unwrap();
        assert_eq!(a.watermark().unwrap(), Some(orphan - 1));
        assert_eq!(a.sweep(&[]).unwrap(), 1);
        assert_eq!(a.watermark().unwrap(), Some(orphan));
        assert!(claimed_write(&doomed, orphan).is_err());

        // A live process's own reservation is swept only once it no longer works on it.
        let own = a.reserve_position(0).unwrap();
        admin
            .execute(
                "UPDATE hearth_stream_reserved SET at = now() - interval '1 minute' WHERE pos = $1",
                &[&i64::try_from(own).unwrap()],
            )
            .unwrap();
        assert_eq!(b.sweep(&[]).unwrap(), 0, "a's heartbeat is fresh");
        assert_eq!(a.sweep(&[own]).unwrap(), 0, "a still works on it");
        assert_eq!(a.sweep(&[]).unwrap(), 1);
    }

    #[test]
    fn a_connection_the_server_closes_is_opened_again() {
        let cluster = TestCluster::start();
        let postgres = PostgresEngine::open(&cluster.url, &["t"], 1).unwrap();
        postgres.write(vec![WriteOp::Put { cf: "t", key: vec![1], value: vec![2] }], true).unwrap();
        // Another session ends every other connection, as a database restart or failover would.
        let mut admin = postgres::Client::connect(&cluster.url, postgres::NoTls).unwrap();
        admin
            .batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname = 'postgres'")
            .unwrap();
        // The request that meets the closed connection runs again on a new one.
        assert_eq!(postgres.get("t", &[1]).unwrap(), Some(vec![2]));
        postgres.write(vec![WriteOp::Put { cf: "t", key: vec![3], value: vec![4] }], true).unwrap();
        assert_eq!(postgres.get("t", &[3]).unwrap(), Some(vec![4]));
    }
}
