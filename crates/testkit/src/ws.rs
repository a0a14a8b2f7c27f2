//! A blocking WebSocket client speaking the bucket-streamer protocol, with
//! timeouts so a silent server fails a test instead of hanging it.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub struct Client {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
}

/// One message from the server.
#[derive(Debug)]
pub enum Incoming {
    Json(Value),
    Binary(Vec<u8>),
}

/// A `Frame` answer with its JPEG, or a `FrameError`.
#[derive(Debug)]
pub enum Answer {
    Frame { header: Value, jpeg: Vec<u8> },
    Error(Value),
}

impl Answer {
    pub fn index(&self) -> i64 {
        match self {
            Answer::Frame { header, .. } | Answer::Error(header) => header["index"].as_i64().unwrap_or(-1),
        }
    }
}

impl Client {
    pub fn connect(url: &str) -> Result<Self> {
        let (socket, _) = tungstenite::connect(url).with_context(|| format!("cannot connect to {url}"))?;
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        }
        Ok(Self { socket })
    }

    pub fn send_json(&mut self, value: &Value) -> Result<()> {
        self.send_text(&value.to_string())
    }

    pub fn send_text(&mut self, text: &str) -> Result<()> {
        self.socket.send(Message::text(text))?;
        Ok(())
    }

    pub fn receive(&mut self) -> Result<Incoming> {
        loop {
            match self.socket.read().context("no message from the server")? {
                Message::Text(text) => return Ok(Incoming::Json(serde_json::from_str(text.as_str())?)),
                Message::Binary(bytes) => return Ok(Incoming::Binary(bytes.to_vec())),
                Message::Close(frame) => bail!("the server closed the connection: {frame:?}"),
                _ => continue,
            }
        }
    }

    pub fn receive_json(&mut self) -> Result<Value> {
        match self.receive()? {
            Incoming::Json(value) => Ok(value),
            Incoming::Binary(bytes) => bail!("expected JSON, got {} binary bytes", bytes.len()),
        }
    }

    /// Reads one answer to a requested frame; a `Frame` must be followed
    /// immediately by exactly `size` binary bytes.
    pub fn receive_answer(&mut self) -> Result<Answer> {
        let header = self.receive_json()?;
        match header["type"].as_str() {
            Some("Frame") => {
                let size = header["size"].as_u64().context("Frame without size")? as usize;
                match self.receive()? {
                    Incoming::Binary(jpeg) if jpeg.len() == size => Ok(Answer::Frame { header, jpeg }),
                    Incoming::Binary(jpeg) => {
                        bail!("Frame said {size} bytes, binary has {}", jpeg.len())
                    }
                    Incoming::Json(other) => bail!("Frame not followed by its JPEG but by {other}"),
                }
            }
            Some("FrameError") => Ok(Answer::Error(header)),
            _ => bail!("expected Frame or FrameError, got {header}"),
        }
    }

    /// Reads until the server closes the connection; its close code and reason.
    pub fn close_code(&mut self) -> Result<(u16, String)> {
        loop {
            match self.socket.read().context("the connection ended without a close frame")? {
                Message::Close(Some(frame)) => return Ok((frame.code.into(), frame.reason.to_string())),
                Message::Close(None) => bail!("closed without a code"),
                _ => continue,
            }
        }
    }

    pub fn send_binary(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.socket.send(Message::binary(bytes))?;
        Ok(())
    }

    /// `SetVideo` and its `VideoSet` answer.
    pub fn set_video(&mut self, path: &str) -> Result<Value> {
        self.send_json(&serde_json::json!({"type": "SetVideo", "path": path}))?;
        self.receive_json()
    }
}
