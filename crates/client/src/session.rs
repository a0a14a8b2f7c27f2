//! One WebSocket session with the server. The URL may carry the video
//! (`/ws?video=`, the key a load balancer routes by). Reading is bounded by
//! a timeout, so a silent server fails the caller instead of hanging it. A
//! connection lost to a restart (close 1012, 1001) or cut without a close
//! frame (a killed server) is reported as `Lost`, so the caller can
//! `reconnect` and ask again for what went unanswered. The session splits
//! into a `Sender` and a `Receiver` for callers that write while they read.

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One message from the server.
#[derive(Debug)]
pub enum Incoming {
    Json(Value),
    Binary(Bytes),
    /// The server closed the session, with its code and reason if it gave one.
    Closed(Option<(u16, String)>),
    /// The connection broke or ended without a close frame.
    Lost(String),
}

/// The answer to one requested frame.
#[derive(Debug)]
pub enum Answer {
    /// A `Frame` header and the encoded image that followed it.
    Frame {
        header: Value,
        image: Bytes,
    },
    FrameError(Value),
    /// The connection is gone in a way a reconnect mends.
    Lost(String),
}

impl Answer {
    /// The client's label of the frame (`index`), -1 when there is none.
    pub fn index(&self) -> i64 {
        match self {
            Answer::Frame { header, .. } | Answer::FrameError(header) => header["index"].as_i64().unwrap_or(-1),
            Answer::Lost(_) => -1,
        }
    }
}

/// The writing half of a session.
pub struct Sender(SplitSink<Socket, Message>);

/// The reading half of a session.
pub struct Receiver {
    stream: SplitStream<Socket>,
    timeout: Duration,
}

pub struct Session {
    url: String,
    /// The base URL and video of a session made by `open`.
    reopen: Option<(String, String)>,
    timeout: Duration,
    sender: Sender,
    receiver: Receiver,
    /// How many times the connection was lost and opened again.
    pub reconnects: usize,
}

/// `base` (`ws://host:port/ws`, perhaps with a query) with `video=` added.
pub fn session_url(base: &str, video: &str) -> Result<String> {
    let mut url = url::Url::parse(base).with_context(|| format!("{base} is not a URL"))?;
    url.query_pairs_mut().append_pair("video", video);
    Ok(url.into())
}

impl Session {
    /// Connects to `url` as it is; the caller reads the first answer.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self> {
        let (socket, _) = tokio::time::timeout(timeout, tokio_tungstenite::connect_async(url))
            .await
            .with_context(|| format!("cannot connect to {url} within {} s", timeout.as_secs()))?
            .with_context(|| format!("cannot connect to {url}"))?;
        Ok(Self::over(url, socket, timeout))
    }

    /// Connects to the session of `video` and waits for its `VideoSet`,
    /// retrying refusals with a growing pause until `timeout` has passed
    /// (the server may be restarting, a proxy may still route to it).
    pub async fn open(base: &str, video: &str, timeout: Duration) -> Result<Self> {
        let url = session_url(base, video)?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(25);
        loop {
            let error = match Self::connect(&url, timeout).await {
                Ok(mut session) => match session.receiver.next_message().await {
                    Ok(Incoming::Json(reply)) => {
                        ensure!(reply["type"] == "VideoSet", "the session began with {reply}, not VideoSet");
                        ensure!(reply["ok"] == true, "the server cannot open the video: {}", reply["error"]);
                        session.reopen = Some((base.into(), video.into()));
                        return Ok(session);
                    }
                    Ok(other) => format!("no VideoSet answer but {other:?}"),
                    Err(error) => error.to_string(),
                },
                Err(error) => format!("{error:#}"),
            };
            if started.elapsed() + pause > timeout {
                bail!("cannot open {url} within {} s: {error}", timeout.as_secs());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    fn over(url: &str, socket: Socket, timeout: Duration) -> Self {
        let (sink, stream) = socket.split();
        Self {
            url: url.into(),
            reopen: None,
            timeout,
            sender: Sender(sink),
            receiver: Receiver { stream, timeout },
            reconnects: 0,
        }
    }

    /// Opens the session again: as `open` did (retrying), or as `connect` did.
    pub async fn reconnect(&mut self) -> Result<()> {
        // Answer the server's close (if it sent one), so it need not wait for it.
        let _ = tokio::time::timeout(Duration::from_millis(100), self.sender.0.close()).await;
        let mut again = match &self.reopen {
            Some((base, video)) => Self::open(base, video, self.timeout).await?,
            None => Self::connect(&self.url, self.timeout).await?,
        };
        again.reconnects = self.reconnects + 1;
        *self = again;
        Ok(())
    }

    pub async fn send_json(&mut self, message: &Value) -> Result<()> {
        self.sender.send_json(message).await
    }

    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.sender.send_text(text).await
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.sender.send_binary(bytes).await
    }

    pub async fn next_message(&mut self) -> Result<Incoming> {
        self.receiver.next_message().await
    }

    pub async fn next_answer(&mut self) -> Result<Answer> {
        self.receiver.next_answer().await
    }

    /// The two halves, for a caller that reads and writes at once.
    pub fn split(self) -> (Sender, Receiver) {
        (self.sender, self.receiver)
    }

    pub async fn close(mut self) {
        let _ = self.sender.0.close().await;
    }
}

impl Sender {
    pub async fn send_json(&mut self, message: &Value) -> Result<()> {
        self.send_text(&message.to_string()).await
    }

    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.0.send(Message::text(text)).await.context("cannot send to the server")
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.0.send(Message::binary(bytes)).await.context("cannot send to the server")
    }

    pub async fn close(mut self) {
        let _ = self.0.close().await;
    }
}

impl Receiver {
    /// The next text, binary or close message (pings are answered by the
    /// library and skipped); an error when none comes within the timeout.
    pub async fn next_message(&mut self) -> Result<Incoming> {
        loop {
            let message = match tokio::time::timeout(self.timeout, self.stream.next()).await {
                Err(_) => bail!("no answer from the server within {} s", self.timeout.as_secs()),
                Ok(None) => return Ok(Incoming::Lost("the connection ended".into())),
                Ok(Some(Err(error))) => return Ok(Incoming::Lost(format!("the connection broke: {error}"))),
                Ok(Some(Ok(message))) => message,
            };
            return Ok(match message {
                Message::Text(text) => Incoming::Json(
                    serde_json::from_str(text.as_str()).context("the server sent text that is not JSON")?,
                ),
                Message::Binary(bytes) => Incoming::Binary(bytes),
                Message::Close(frame) => Incoming::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string()))),
                _ => continue,
            });
        }
    }

    /// The next `Frame` (with its image, whose length must be the header's
    /// `size`) or `FrameError`. A close the client can mend by reconnecting
    /// (restart, going away, none) is `Lost`; any other close is an error.
    pub async fn next_answer(&mut self) -> Result<Answer> {
        let header = match self.next_message().await? {
            Incoming::Json(header) => header,
            Incoming::Binary(bytes) => bail!("{} binary bytes without a Frame header", bytes.len()),
            Incoming::Closed(frame) => return closed(frame),
            Incoming::Lost(why) => return Ok(Answer::Lost(why)),
        };
        match header["type"].as_str() {
            Some("Frame") => match self.next_message().await? {
                Incoming::Binary(image) => {
                    if let Some(size) = header["size"].as_u64() {
                        ensure!(image.len() as u64 == size, "Frame said {size} bytes, its image has {}", image.len());
                    }
                    Ok(Answer::Frame { header, image })
                }
                Incoming::Closed(frame) => closed(frame),
                Incoming::Lost(why) => Ok(Answer::Lost(why)),
                Incoming::Json(other) => bail!("Frame {header} not followed by its image but by {other}"),
            },
            Some("FrameError") => Ok(Answer::FrameError(header)),
            _ => bail!("expected Frame or FrameError, got {header}"),
        }
    }
}

fn closed(frame: Option<(u16, String)>) -> Result<Answer> {
    match frame {
        Some((code, reason)) if code == u16::from(CloseCode::Restart) || code == u16::from(CloseCode::Away) => {
            Ok(Answer::Lost(format!("closed by the server ({code}: {reason})")))
        }
        None => Ok(Answer::Lost("closed without a code".into())),
        Some((code, reason)) => bail!("the server closed the session: {code} {reason}"),
    }
}
