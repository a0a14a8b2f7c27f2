//! The open-loop client of `bench --interval-ms`: a person dragging a
//! timeline. It asks for a new random position every interval without
//! waiting for answers, then measures how long the final position took to
//! arrive. With `--mode latest` the server supersedes the positions the
//! cursor has left; without it every position is decoded in turn.

use anyhow::{bail, ensure, Result};
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::bench::next_json;

/// What one dragging client saw.
pub struct DragResult {
    pub requested: usize,
    pub received: usize,
    pub superseded: usize,
    pub errored: usize,
    pub bytes: u64,
    /// From sending the last position to receiving its frame.
    pub final_latency_ms: f64,
}

pub struct Drag<'a> {
    pub url: &'a str,
    pub video: &'a str,
    /// (offset, irap_offset) of every frame.
    pub frames: &'a [(u64, Option<u64>)],
    pub mode: Option<&'a str>,
    pub interval: Duration,
    pub duration: Duration,
    pub timeout: Duration,
}

impl Drag<'_> {
    pub async fn run(&self) -> Result<DragResult> {
        ensure!(!self.frames.is_empty(), "no frames to drag over");
        let session = crate::session::Session::open(self.url, self.video, self.timeout).await?;
        let (mut sink, mut stream) = session.into_socket().split();

        let mut result =
            DragResult { requested: 0, received: 0, superseded: 0, errored: 0, bytes: 0, final_latency_ms: 0.0 };
        let started = Instant::now();
        let mut ticks = tokio::time::interval(self.interval);
        let mut last_sent = Instant::now();
        let mut rng = StdRng::from_rng(&mut rand::rng());
        let mut answered = 0usize;
        // When each position's answer arrived (by label), to time the last one.
        let mut answer_times: Vec<Option<Instant>> = Vec::new();
        let mut sending = true;
        while sending || answered < result.requested {
            tokio::select! {
                _ = ticks.tick(), if sending => {
                    if started.elapsed() >= self.duration {
                        sending = false;
                        continue;
                    }
                    let (offset, irap) = self.frames[rng.random_range(0..self.frames.len())];
                    let mut frame = json!({"offset": offset, "index": result.requested});
                    if let Some(irap) = irap {
                        frame["irap_offset"] = json!(irap);
                    }
                    let mut request = json!({"type": "RequestFrames", "frames": [frame]});
                    if let Some(mode) = self.mode {
                        request["mode"] = json!(mode);
                    }
                    sink.send(Message::text(request.to_string())).await?;
                    last_sent = Instant::now();
                    result.requested += 1;
                    answer_times.push(None);
                }
                header = next_json(&mut stream, self.timeout) => {
                    let header = header?;
                    answered += 1;
                    let arrived = Instant::now();
                    match header["type"].as_str() {
                        Some("Frame") => {
                            match tokio::time::timeout(self.timeout, stream.next()).await {
                                Ok(Some(Ok(Message::Binary(jpeg)))) => result.bytes += jpeg.len() as u64,
                                other => bail!("Frame not followed by its JPEG: {other:?}"),
                            }
                            result.received += 1;
                        }
                        Some("FrameError") if header["error"] == "superseded" => result.superseded += 1,
                        Some("FrameError") => result.errored += 1,
                        _ => bail!("unexpected message: {header}"),
                    }
                    if let Some(slot) = header["index"].as_u64().and_then(|label| answer_times.get_mut(label as usize)) {
                        *slot = Some(arrived);
                    }
                }
            }
        }
        let finished = answer_times.last().copied().flatten().unwrap_or_else(Instant::now);
        result.final_latency_ms = finished.saturating_duration_since(last_sent).as_secs_f64() * 1000.0;
        let _ = sink.close().await;
        Ok(result)
    }
}
