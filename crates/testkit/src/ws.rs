//! The tests' blocking view of the shared protocol client (`client`, the
//! one `bench` uses): each call runs it on a runtime of this client's own,
//! reads time out so a silent server fails a test instead of hanging it,
//! and a lost connection is an error (a test never reconnects).

use anyhow::{bail, Result};
use serde_json::Value;
use std::time::Duration;

/// How long a test waits for the server's next message.
const TIMEOUT: Duration = Duration::from_secs(60);

pub struct Client {
    runtime: tokio::runtime::Runtime,
    session: client::Session,
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
    /// Connects to `url` as it is (the test reads the first answer).
    pub fn connect(url: &str) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let session = runtime.block_on(client::Session::connect(url, TIMEOUT))?;
        Ok(Self { runtime, session })
    }

    pub fn send_json(&mut self, value: &Value) -> Result<()> {
        self.runtime.block_on(self.session.send_json(value))
    }

    pub fn send_text(&mut self, text: &str) -> Result<()> {
        self.runtime.block_on(self.session.send_text(text))
    }

    pub fn send_binary(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.runtime.block_on(self.session.send_binary(bytes))
    }

    pub fn receive(&mut self) -> Result<Incoming> {
        match self.runtime.block_on(self.session.next_message())? {
            client::Incoming::Json(value) => Ok(Incoming::Json(value)),
            client::Incoming::Binary(bytes) => Ok(Incoming::Binary(bytes.to_vec())),
            client::Incoming::Closed(frame) => bail!("the server closed the connection: {frame:?}"),
            client::Incoming::Lost(why) => bail!("no message from the server: {why}"),
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
        match self.runtime.block_on(self.session.next_answer())? {
            client::Answer::Frame { header, image } => Ok(Answer::Frame { header, jpeg: image.to_vec() }),
            client::Answer::FrameError(error) => Ok(Answer::Error(error)),
            client::Answer::Lost(why) => bail!("no answer from the server: {why}"),
        }
    }

    /// Reads until the server closes the connection; its close code and reason.
    pub fn close_code(&mut self) -> Result<(u16, String)> {
        loop {
            match self.runtime.block_on(self.session.next_message())? {
                client::Incoming::Closed(Some(code_and_reason)) => return Ok(code_and_reason),
                client::Incoming::Closed(None) => bail!("closed without a code"),
                client::Incoming::Lost(why) => bail!("the connection ended without a close frame: {why}"),
                _ => continue,
            }
        }
    }

    /// `SetVideo` and its `VideoSet` answer.
    pub fn set_video(&mut self, path: &str) -> Result<Value> {
        self.send_json(&serde_json::json!({"type": "SetVideo", "path": path}))?;
        self.receive_json()
    }
}
