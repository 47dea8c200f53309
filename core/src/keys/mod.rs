//! The server's own signing keys; later, remote keys and signature checks.

pub mod backup;
pub mod e2ee;
#[cfg(test)]
mod e2ee_tests;
pub mod signing_key;
