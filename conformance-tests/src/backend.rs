//! Which storage engine the black-box tests' servers run on. By default each server gets a
//! RocksDB directory of its own. With `TEST_HEARTH_POSTGRES` set to the connection string of
//! a running PostgreSQL cluster, without a database name (`scripts/test` starts one for its
//! PostgreSQL pass), each server gets a database of its own on that cluster instead, so the
//! same tests cover `storage.backend = "postgres"`. A test that sets a backend of its own
//! keeps it; a child process follows the suite when it is given a data directory
//! (`HEARTH_STORAGE__PATH`) and no backend, even with a config file.

use std::path::Path;

use sha2::{Digest, Sha256};

/// The variable naming the cluster (not under `HEARTH_`, which the binary reads as its
/// configuration).
pub const ENV: &str = "TEST_HEARTH_POSTGRES";

/// Connections each test server keeps: several servers of several tests share the cluster.
const CONNECTIONS: usize = 4;

/// The cluster's connection string, when the tests run on PostgreSQL.
pub fn postgres() -> Option<String> {
    std::env::var(ENV).ok().filter(|url| !url.trim().is_empty())
}

/// Puts a test server's config on the PostgreSQL cluster, when there is one.
pub fn apply(config: &mut hearth::Config) {
    if let Some(cluster) = postgres() {
        config.storage.backend = hearth_storage::Backend::Postgres;
        config.storage.postgres_url = Some(database_for(&cluster, &config.storage.path));
        config.storage.postgres_connections = CONNECTIONS;
    }
}

/// The environment that puts a `hearth` child process on the cluster, given the process's
/// `HEARTH_STORAGE__PATH`; empty when the tests run on RocksDB.
pub fn process_env(data_dir: &Path) -> Vec<(&'static str, String)> {
    match postgres() {
        Some(cluster) => vec![
            ("HEARTH_STORAGE__BACKEND", "postgres".to_owned()),
            ("HEARTH_STORAGE__POSTGRES_URL", database_for(&cluster, data_dir)),
            ("HEARTH_STORAGE__POSTGRES_CONNECTIONS", CONNECTIONS.to_string()),
        ],
        None => Vec::new(),
    }
}

/// The database that belongs to `data_dir` in this test process: created on first use, and
/// the same one again when a server restarts on that directory.
pub fn database_for(cluster: &str, data_dir: &Path) -> String {
    let mut hash = Sha256::new();
    hash.update(std::process::id().to_be_bytes());
    hash.update(data_dir.as_os_str().as_encoded_bytes());
    let name = format!("t_{}", &hex::encode(hash.finalize())[..24]);
    let admin = format!("{cluster} dbname=postgres");
    let create = format!("CREATE DATABASE {name}");
    // The synchronous driver runs a runtime of its own, which cannot start inside the
    // caller's, so it gets a thread.
    let created = std::thread::spawn(move || -> Result<(), postgres::Error> {
        let mut client = postgres::Client::connect(&admin, postgres::NoTls)?;
        match client.batch_execute(&create) {
            Err(error) if error.code() == Some(&postgres::error::SqlState::DUPLICATE_DATABASE) => Ok(()),
            other => other,
        }
    })
    .join()
    .expect("the database-creating thread");
    if let Err(error) = created {
        panic!("creating a test database on {ENV} ({cluster}): {error}");
    }
    format!("{cluster} dbname={name}")
}
