//! The open-loop client of `bench --interval-ms`: a person dragging a
//! timeline. It asks for a new random position every interval without
//! waiting for answers, then measures how long the final position took to
//! arrive. With `--mode latest` the server supersedes the positions the
//! cursor has left; without it every position is decoded in turn.

use anyhow::{bail, ensure, Context, Result};
use client::{Answer, Session};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::time::{Duration, Instant};

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
        let (mut sender, mut receiver) = Session::open(self.url, self.video, self.timeout).await?.split();
        // Answers are read by a task of their own: a read cut short by the
        // next tick would lose a Frame header whose image had not come yet.
        let (answers_tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            loop {
                let answer = receiver.next_answer().await;
                let more = matches!(answer, Ok(Answer::Frame { .. } | Answer::FrameError(_)));
                if answers_tx.send(answer).is_err() || !more {
                    break;
                }
            }
        });

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
                    sender.send_json(&request).await?;
                    last_sent = Instant::now();
                    result.requested += 1;
                    answer_times.push(None);
                }
                answer = answers.recv() => {
                    let header = match answer.context("the answer reader stopped")?? {
                        Answer::Frame { header, image } => {
                            result.bytes += image.len() as u64;
                            result.received += 1;
                            header
                        }
                        Answer::FrameError(header) if header["error"] == "superseded" => {
                            result.superseded += 1;
                            header
                        }
                        Answer::FrameError(header) => {
                            result.errored += 1;
                            header
                        }
                        Answer::Lost(why) => bail!("the session was lost: {why}"),
                    };
                    answered += 1;
                    let arrived = Instant::now();
                    if let Some(slot) = header["index"].as_u64().and_then(|label| answer_times.get_mut(label as usize)) {
                        *slot = Some(arrived);
                    }
                }
            }
        }
        let finished = answer_times.last().copied().flatten().unwrap_or_else(Instant::now);
        result.final_latency_ms = finished.saturating_duration_since(last_sent).as_secs_f64() * 1000.0;
        reader.abort();
        sender.close().await;
        Ok(result)
    }
}
