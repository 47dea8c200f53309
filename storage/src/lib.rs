//! Hearth's persistent storage: one catalog of typed tables over an ordered key-value engine.
//!
//! Layout:
//! - [`engine`]: the [`KvEngine`] trait, a RocksDB engine (feature `rocksdb`) and an in-memory one.
//! - [`codec`]: order-preserving key encoding and value encoding.
//! - [`schema`]: the catalog; every column family and the types of its keys and values.
//! - [`records`]: the shapes persisted as values.
//! - [`db`]: [`Db`], typed reads, scans and atomic write batches; schema version and migrations.
//! - [`search`]: the full-text index of room events (tantivy), derived from the tables.
//!
//! Invariant: this crate imports nothing from the Hearth workspace, and nothing outside it builds keys
//! by hand: every key goes through [`codec::KeyCodec`].

pub mod codec;
pub mod db;
pub mod engine;
mod error;
pub mod records;
#[cfg(feature = "redis")]
pub mod redis_kv;
pub mod schema;
pub mod search;

pub use codec::{HasPrefix, KeyCodec, ValueCodec};
pub use db::{Backend, Batch, Db, Direction, StorageConfig};
pub use engine::{KvEngine, memory::MemEngine};
pub use error::{Error, Result};
pub use schema::Table;
