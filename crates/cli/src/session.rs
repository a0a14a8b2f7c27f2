//! The client side of one WebSocket session on one video, as `bench` uses
//! it: the URL carries the video (`/ws?video=`, the key a load balancer
//! routes by), and a connection lost to a restart (close 1012, 1001) or
//! cut without a close frame (a killed server) is reported as `Lost`, so
//! the caller can `reconnect` and ask again for what went unanswered.

use anyhow::{bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the server sent next.
pub enum Answer {
    Frame {
        header: Value,
        jpeg: Bytes,
    },
    FrameError(Value),
    /// The connection is gone in a way a reconnect mends.
    Lost(String),
}

pub struct Session {
    url: String,
    socket: Socket,
    timeout: Duration,
    /// How many times the connection was lost and opened again.
    pub reconnects: usize,
}

/// `base` (`ws://host:port/ws`, perhaps with a query) with `video=` added.
pub fn session_url(base: &str, video: &str) -> Result<String> {
    let mut url = reqwest::Url::parse(base).with_context(|| format!("{base} is not a URL"))?;
    url.query_pairs_mut().append_pair("video", video);
    Ok(url.into())
}

impl Session {
    /// Connects to the session of `video` and waits for its `VideoSet`.
    pub async fn open(base: &str, video: &str, timeout: Duration) -> Result<Self> {
        let url = session_url(base, video)?;
        let socket = connect(&url, timeout).await?;
        Ok(Self { url, socket, timeout, reconnects: 0 })
    }

    /// Sends a JSON message; `Ok(false)` when the connection is lost.
    pub async fn send(&mut self, message: &Value) -> Result<bool> {
        Ok(self.socket.send(Message::text(message.to_string())).await.is_ok())
    }

    pub async fn next(&mut self) -> Result<Answer> {
        let header = loop {
            match self.read().await? {
                Ok(Message::Text(text)) => break serde_json::from_str::<Value>(text.as_str())?,
                Ok(Message::Binary(bytes)) => bail!("{} binary bytes without a Frame header", bytes.len()),
                Ok(Message::Close(frame)) => return closed(frame.map(|f| (f.code, f.reason.to_string()))),
                Ok(_) => continue,
                Err(lost) => return Ok(Answer::Lost(lost)),
            }
        };
        match header["type"].as_str() {
            Some("Frame") => match self.read().await? {
                Ok(Message::Binary(jpeg)) => Ok(Answer::Frame { header, jpeg }),
                Ok(Message::Close(frame)) => closed(frame.map(|f| (f.code, f.reason.to_string()))),
                Ok(other) => bail!("Frame {header} not followed by its JPEG but {other:?}"),
                Err(lost) => Ok(Answer::Lost(lost)),
            },
            Some("FrameError") => Ok(Answer::FrameError(header)),
            _ => bail!("unexpected message while waiting for frames: {header}"),
        }
    }

    /// One message, or why the connection is gone (`Err` inside: mendable).
    async fn read(&mut self) -> Result<Result<Message, String>> {
        match tokio::time::timeout(self.timeout, self.socket.next()).await {
            Err(_) => bail!("no answer from the server within {} s", self.timeout.as_secs()),
            Ok(None) => Ok(Err("the connection ended".into())),
            Ok(Some(Err(error))) => Ok(Err(format!("the connection broke: {error}"))),
            Ok(Some(Ok(message))) => Ok(Ok(message)),
        }
    }

    /// Opens the session again (retrying for up to the timeout: the server
    /// may be restarting, a proxy may still route to it).
    pub async fn reconnect(&mut self) -> Result<()> {
        // Answer the server's close (if it sent one), so it need not wait for it.
        let _ = tokio::time::timeout(Duration::from_millis(100), self.socket.close(None)).await;
        self.socket = connect(&self.url, self.timeout).await?;
        self.reconnects += 1;
        Ok(())
    }

    /// The WebSocket itself, for a client that reads and writes at once.
    pub fn into_socket(self) -> Socket {
        self.socket
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// A close the client can mend by reconnecting (restart, going away) is
/// `Lost`; any other close is an error.
fn closed(frame: Option<(CloseCode, String)>) -> Result<Answer> {
    match frame {
        Some((code @ (CloseCode::Restart | CloseCode::Away), reason)) => {
            Ok(Answer::Lost(format!("closed by the server ({}: {reason})", u16::from(code))))
        }
        None => Ok(Answer::Lost("closed without a code".into())),
        Some((code, reason)) => bail!("the server closed the session: {} {reason}", u16::from(code)),
    }
}

/// Connects and reads the `VideoSet` answer, retrying refusals with a
/// growing pause until `timeout` has passed.
async fn connect(url: &str, timeout: Duration) -> Result<Socket> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(25);
    loop {
        let error = match tokio_tungstenite::connect_async(url).await {
            Ok((mut socket, _)) => {
                let reply = tokio::time::timeout(timeout, crate::bench::next_json(&mut socket, timeout)).await;
                match reply {
                    Ok(Ok(reply)) => {
                        ensure!(reply["type"] == "VideoSet", "the session began with {reply}, not VideoSet");
                        ensure!(reply["ok"] == true, "the server cannot open the video: {}", reply["error"]);
                        return Ok(socket);
                    }
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => "no VideoSet answer".into(),
                }
            }
            Err(error) => error.to_string(),
        };
        if started.elapsed() + pause > timeout {
            bail!("cannot connect to {url} within {} s: {error}", timeout.as_secs());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}
