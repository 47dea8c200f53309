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
    ops::Bound,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, mpsc},
};

use postgres::{Client, NoTls, Statement};

use super::{KvEngine, RawIter, WriteOp};
use crate::{Error, Result};

/// Rows per query of a range.
const PAGE: i64 = 256;

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

pub struct PostgresEngine {
    jobs: mpsc::Sender<Job>,
    tables: Vec<&'static str>,
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
        let client = Client::connect(url, NoTls).map_err(|e| engine_err(&e))?;
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
        let mut ddl = String::new();
        for cf in tables {
            ddl.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS {} (k bytea PRIMARY KEY, v bytea NOT NULL);",
                table(cf)
            ));
        }
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
        Ok(Self { jobs, tables: tables.to_vec() })
    }

    /// Runs `f` on a pooled connection and waits for its answer.
    fn run<T: Send + 'static>(&self, f: impl Fn(&mut Conn) -> Result<T> + Send + 'static) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn| {
            let mut answer = f(conn);
            // Every request is idempotent (reads, and batches of puts and deletes, which write
            // the same whether or not a first try committed), so one that met a connection the
            // server closed (a restart, a failover) runs again once on a new connection.
            if answer.is_err() && !conn.alive() {
                answer = conn.reopen().and_then(|()| f(conn));
            }
            let _ = tx.send(answer);
        });
        self.jobs.send(job).map_err(|_| Error::Engine("postgres workers have stopped".to_owned()))?;
        rx.recv().map_err(|_| Error::Engine("postgres request failed inside its worker".to_owned()))?
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
            }
        }
        self.run(move |conn| {
            let mut statements = Vec::with_capacity(ops.len());
            for op in &ops {
                let sql = match op {
                    WriteOp::Put { cf, .. } => format!(
                        "INSERT INTO {} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                        table(cf)
                    ),
                    WriteOp::Delete { cf, .. } => format!("DELETE FROM {} WHERE k = $1", table(cf)),
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
        }
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
