//! The WebSocket channel from a test's side.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

pub type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON frame, within a generous bound; pings and pongs are skipped.
pub async fn next_frame(socket: &mut Socket) -> Value {
    loop {
        let message =
            tokio::time::timeout(Duration::from_secs(20), socket.next()).await.expect("a frame in time");
        match message.expect("open socket").expect("frame") {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("a JSON frame"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}
