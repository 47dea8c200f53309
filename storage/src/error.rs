use thiserror::Error;

/// Everything that can go wrong below the homeserver logic.
#[derive(Debug, Error)]
pub enum Error {
    #[error("storage engine: {0}")]
    Engine(String),
    #[error("table {table}: cannot decode key {key_hex}: {reason}")]
    KeyDecode { table: &'static str, key_hex: String, reason: String },
    #[error("table {table}: cannot decode value under key {key_hex}: {reason}")]
    ValueDecode { table: &'static str, key_hex: String, reason: String },
    #[error("cannot encode value: {0}")]
    ValueEncode(String),
    #[error("database schema version {found} is newer than this build understands ({supported})")]
    SchemaTooNew { found: u64, supported: u64 },
    #[error("migration to schema version {version} failed: {reason}")]
    Migration { version: u64, reason: String },
    #[error("unknown column family {0}")]
    UnknownTable(&'static str),
    #[error("table {table}: a key of {len} bytes is over the limit of {max}")]
    KeyTooLong { table: &'static str, len: usize, max: usize },
}

impl Error {
    /// Whether this is a stored value that cannot be decoded: one bad record, which readers skip
    /// (logged), as opposed to an engine failure, which stays an error.
    pub fn is_value_decode(&self) -> bool {
        matches!(self, Self::ValueDecode { .. })
    }

    /// Whether a write was refused for a key over [`crate::db::MAX_KEY_BYTES`]: the input's
    /// fault (an identifier far longer than any real one), not the store's.
    pub fn is_key_too_long(&self) -> bool {
        matches!(self, Self::KeyTooLong { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
