//! A session's queue of frames waiting to be served, and the order they are
//! served in. `fifo` (the default, Stage 1) serves requests in arrival
//! order; `lifo` serves the newest request first and still answers older
//! ones; `latest` serves the newest request and answers everything older
//! still queued with `superseded`, so a person dragging a timeline gets the
//! frame under the cursor, not a backlog. `Cancel` takes everything queued.
//!
//! Frames already taken by the worker are on a decoder: they finish (their
//! JPEGs go to the cache) and are answered normally.

use crate::channel::{Channel, FrameFailure, Wanted};
use crate::protocol::FrameRequest;
use media::output::Output;
use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Fifo,
    Lifo,
    Latest,
}

impl Mode {
    pub fn parse(text: Option<&str>) -> Result<Self, String> {
        match text {
            None | Some("fifo") => Ok(Mode::Fifo),
            Some("lifo") => Ok(Mode::Lifo),
            Some("latest") => Ok(Mode::Latest),
            Some(other) => Err(format!("unknown mode {other:?}: use fifo, lifo or latest")),
        }
    }
}

/// One frame to serve, with what the worker needs to serve it.
pub struct Job {
    pub frame: FrameRequest,
    /// The video (as set when the frame was requested) and the frame's
    /// decode position in it, or why the frame cannot be served.
    pub target: Result<(Arc<Channel>, u32), FrameFailure>,
    /// What the frame is encoded as (the request's `output`, checked).
    pub output: Output,
    /// What else this frame's request wants of the same video.
    pub wanted: Wanted,
    /// The mode of the request the frame came with.
    pub mode: Mode,
    /// Set when a newer `latest` request replaces this frame while it decodes.
    pub cancel: Arc<AtomicBool>,
}

#[derive(Default)]
pub struct Queue {
    jobs: VecDeque<Job>,
}

impl Queue {
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Queues one request's frames; returns the frames it supersedes.
    pub fn push(&mut self, request: Vec<Job>, mode: Mode) -> Vec<Job> {
        match mode {
            Mode::Fifo => {
                self.jobs.extend(request);
                Vec::new()
            }
            Mode::Lifo => {
                for job in request.into_iter().rev() {
                    self.jobs.push_front(job);
                }
                Vec::new()
            }
            Mode::Latest => {
                let superseded = self.jobs.drain(..).collect();
                self.jobs.extend(request);
                superseded
            }
        }
    }

    /// The mode of the frame that would be served next.
    pub fn peek_mode(&self) -> Option<Mode> {
        self.jobs.front().map(|job| job.mode)
    }

    /// The next frame to serve.
    pub fn pop(&mut self) -> Option<Job> {
        self.jobs.pop_front()
    }

    /// Removes everything queued (for `Cancel`).
    pub fn take_all(&mut self) -> Vec<Job> {
        self.jobs.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Failure;
    use serde_json::Value;

    fn request(labels: &[i64]) -> Vec<Job> {
        labels
            .iter()
            .map(|&label| Job {
                frame: FrameRequest {
                    label: Value::from(label),
                    request_id: None,
                    offset: Ok(0),
                    irap_offset: None,
                    video: None,
                    output: Default::default(),
                },
                target: Err(FrameFailure::new(Failure::NoVideo, "test")),
                output: Output::jpeg(80),
                wanted: Wanted::default(),
                mode: Mode::Fifo,
                cancel: Default::default(),
            })
            .collect()
    }

    fn order(queue: &mut Queue) -> Vec<i64> {
        std::iter::from_fn(|| queue.pop()).map(|job| job.frame.label.as_i64().unwrap()).collect()
    }

    #[test]
    fn fifo_keeps_arrival_order() {
        let mut queue = Queue::default();
        queue.push(request(&[1, 2]), Mode::Fifo);
        queue.push(request(&[3]), Mode::Fifo);
        assert_eq!(order(&mut queue), vec![1, 2, 3]);
    }

    #[test]
    fn lifo_serves_the_newest_request_first_in_its_own_order() {
        let mut queue = Queue::default();
        queue.push(request(&[1, 2]), Mode::Fifo);
        queue.push(request(&[3, 4]), Mode::Lifo);
        assert_eq!(order(&mut queue), vec![3, 4, 1, 2]);
    }

    #[test]
    fn latest_supersedes_everything_queued() {
        let mut queue = Queue::default();
        queue.push(request(&[1, 2]), Mode::Fifo);
        let superseded = queue.push(request(&[3]), Mode::Latest);
        let labels: Vec<i64> = superseded.iter().map(|job| job.frame.label.as_i64().unwrap()).collect();
        assert_eq!(labels, vec![1, 2]);
        assert_eq!(order(&mut queue), vec![3]);
    }

    #[test]
    fn cancel_takes_everything() {
        let mut queue = Queue::default();
        queue.push(request(&[1, 2]), Mode::Lifo);
        assert_eq!(queue.take_all().len(), 2);
        assert!(queue.is_empty());
    }

    #[test]
    fn modes_parse() {
        assert_eq!(Mode::parse(None), Ok(Mode::Fifo));
        assert_eq!(Mode::parse(Some("latest")), Ok(Mode::Latest));
        assert!(Mode::parse(Some("newest")).is_err());
    }
}
