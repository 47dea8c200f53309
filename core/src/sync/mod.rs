//! The pieces /sync and the WebSocket channel share.

pub mod notifier;
pub mod stream;
