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
}

impl Error {
    /// Whether this is a stored value that cannot be decoded: one bad record, which readers skip
    /// (logged), as opposed to an engine failure, which stays an error.
    pub fn is_value_decode(&self) -> bool {
        matches!(self, Self::ValueDecode { .. })
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
