//! A small SMTP server on loopback that accepts every mail and keeps it for the test to read:
//! RFC 5321's commands, plain, with STARTTLS (RFC 3207, required before a mail), or over TLS
//! from the first byte, with a self-signed certificate for `127.0.0.1`.

use std::sync::{Arc, Mutex};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;

/// A mail as the sink received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent after `DATA` (headers and body), dot-unstuffed.
    pub data: String,
}

impl Received {
    /// A header's value, unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self
            .data
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .replace("\r\n ", " ")
            .replace("\r\n\t", " ");
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    }
}

/// How the sink secures its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkTls {
    /// Plain SMTP, no STARTTLS offered.
    None,
    /// STARTTLS offered, and required before `MAIL FROM`.
    Starttls,
    /// TLS from the first byte.
    Implicit,
}

pub struct SmtpSink {
    pub port: u16,
    /// The PEM certificate (self-signed, for `127.0.0.1`) the sink's TLS presents.
    pub cert_pem: String,
    mails: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a session ended.
enum End<S> {
    Closed,
    /// The client asked for STARTTLS: the plain stream, to go on over TLS.
    StartTls(S),
}

async fn session<S>(
    stream: S,
    mails: Arc<Mutex<Vec<Received>>>,
    offer_tls: bool,
    secure: bool,
) -> std::io::Result<End<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = BufReader::new(stream);
    if !(secure && offer_tls) {
        conn.write_all(b"220 sink.localhost ESMTP\r\n").await?;
    }
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Ok(End::Closed);
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            if offer_tls && !secure {
                b"250-sink.localhost\r\n250-8BITMIME\r\n250 STARTTLS\r\n"
            } else {
                b"250-sink.localhost\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
            }
        } else if upper == "STARTTLS" && offer_tls && !secure {
            conn.write_all(b"220 Go ahead\r\n").await?;
            return Ok(End::StartTls(conn.into_inner()));
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") || upper.starts_with("RSET") {
            b"250 OK\r\n"
        } else if upper.starts_with("MAIL FROM:") && offer_tls && !secure {
            b"530 Must issue a STARTTLS command first\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = command[10..].trim().trim_matches(['<', '>']).to_owned();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(command[8..].trim().trim_matches(['<', '>']).to_owned());
            b"250 OK\r\n"
        } else if upper == "DATA" {
            conn.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if conn.read_line(&mut line).await? == 0 {
                    return Ok(End::Closed);
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            let mail = Received { from: std::mem::take(&mut from), to: std::mem::take(&mut to), data };
            mails.lock().expect("lock").push(mail);
            b"250 OK: queued\r\n"
        } else if upper == "QUIT" {
            conn.write_all(b"221 Bye\r\n").await?;
            return Ok(End::Closed);
        } else {
            b"502 Command not implemented\r\n"
        };
        conn.write_all(reply).await?;
    }
}

async fn connection(
    stream: TcpStream,
    mails: Arc<Mutex<Vec<Received>>>,
    tls: SinkTls,
    acceptor: TlsAcceptor,
) {
    match tls {
        SinkTls::None => {
            let _ = session(stream, mails, false, false).await;
        }
        SinkTls::Implicit => {
            if let Ok(secure) = acceptor.accept(stream).await {
                let _ = session(secure, mails, false, true).await;
            }
        }
        SinkTls::Starttls => {
            if let Ok(End::StartTls(plain)) = session(stream, mails.clone(), true, false).await
                && let Ok(secure) = acceptor.accept(plain).await
            {
                // After the handshake the client greets again with EHLO; no new banner.
                let _ = session(secure, mails, true, true).await;
            }
        }
    }
}

impl SmtpSink {
    pub async fn start() -> Self {
        Self::start_with(SinkTls::None).await
    }

    pub async fn start_with(tls: SinkTls) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (config, cert_pem) = crate::self_signed_tls("127.0.0.1");
        let acceptor = TlsAcceptor::from(config);
        let mails: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = mails.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(connection(stream, kept.clone(), tls, acceptor.clone()));
            }
        });
        Self { port, cert_pem, mails, task }
    }

    pub fn mails(&self) -> Vec<Received> {
        self.mails.lock().expect("lock").clone()
    }

    /// Waits (up to `limit`) until `count` mails arrived; returns them all.
    pub async fn wait_for(&self, count: usize, limit: std::time::Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mails = self.mails();
            if mails.len() >= count || tokio::time::Instant::now() >= deadline {
                return mails;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
