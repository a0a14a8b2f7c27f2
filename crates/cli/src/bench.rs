//! `bucket-streamer bench`: the streaming client (Stage 1's streaming-cli).
//! Connects one or more WebSocket clients, asks for frames in a pattern and
//! batch size, optionally saves the JPEGs, and reports throughput and
//! per-frame latency (request sent → JPEG received) as text or JSON.
//! Each client's URL names its video (`/ws?video=`), so a load balancer
//! hashing on it sends every client of a video to the same server. A
//! connection lost to a restart or a killed server is opened again and
//! the frames not yet answered are asked for again: each frame counts once.

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::drag::{Drag, DragResult};
use client::{Answer, Session};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Frames in order (presentation order from the index, or the file's order).
    Sequential,
    /// Uniformly random frames.
    Random,
    /// A random walk of short jumps back and forth, like dragging a timeline.
    Scrub,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// WebSocket URL of the server.
    #[arg(long, default_value = "ws://127.0.0.1:3000/ws")]
    pub url: String,

    /// Video path on the server; repeat to spread clients over several videos.
    #[arg(long, required = true)]
    pub video: Vec<String>,

    /// Stage 1 offsets JSON to take frames from (default: the server's index).
    #[arg(long)]
    pub frames_file: Option<PathBuf>,

    /// Frames per request: a number, or `all` for one request with every frame.
    #[arg(long, default_value = "all")]
    pub batch: String,

    /// Save every received JPEG in this folder.
    #[arg(long)]
    pub output: Option<PathBuf>,

    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,

    /// Concurrent clients (each its own WebSocket).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,

    /// Order in which frames are requested.
    #[arg(long, value_enum, default_value_t = Pattern::Sequential)]
    pub pattern: Pattern,

    /// Frames per client (default: every frame for sequential, 200 otherwise).
    #[arg(long)]
    pub frames: Option<usize>,

    /// Queue mode sent with every request: fifo, lifo or latest (default: none, the server's fifo).
    #[arg(long)]
    pub mode: Option<String>,

    /// Ask for frames fitting this width (the request's `output`, see
    /// docs/protocol.md; default: the video's size).
    #[arg(long)]
    pub width: Option<u32>,
    /// Ask for frames fitting this height.
    #[arg(long)]
    pub height: Option<u32>,
    /// Ask for frames in this format: jpeg (default), webp or png.
    #[arg(long)]
    pub format: Option<String>,
    /// Ask for this JPEG or WebP quality (default: the server's).
    #[arg(long)]
    pub quality: Option<u8>,

    /// Open loop: ask for a new random frame every this many milliseconds
    /// without waiting for answers (a dragged timeline), and report the
    /// latency of the final one. Runs for --duration-secs.
    #[arg(long)]
    pub interval_ms: Option<u64>,

    /// How long the open loop of --interval-ms runs (default 5 s); without
    /// --interval-ms, clients stop asking for more after this long.
    #[arg(long)]
    pub duration_secs: Option<u64>,

    /// A slow reader: pause this long after every answer before reading the next.
    #[arg(long, default_value_t = 0)]
    pub read_delay_ms: u64,

    /// Seconds to wait for any one answer before giving up.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,

    /// Seed of the random and scrub patterns (client n uses seed + n), so
    /// figures compared with each other ask for the same frames (default:
    /// a new seed every run).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// One frame as the bench names it.
#[derive(Debug, Clone, Deserialize)]
struct FrameRef {
    offset: u64,
    irap_offset: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct FramesFile {
    frames: Vec<FrameRef>,
}

#[derive(Debug, Default)]
struct ClientResult {
    requested: usize,
    received: usize,
    errored: usize,
    bytes: u64,
    latencies_ms: Vec<f64>,
    errors: Vec<String>,
    reconnects: usize,
    /// For each lost connection: from the last frame before to the first after.
    reconnect_gaps_ms: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub frames_requested: usize,
    pub frames_received: usize,
    pub frames_errored: usize,
    pub total_time_ms: f64,
    pub average_fps: f64,
    pub latency_avg_ms: f64,
    pub latency_min_ms: f64,
    pub latency_max_ms: f64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub latency_p99_ms: f64,
    pub total_bytes: u64,
    pub clients: usize,
    pub pattern: Pattern,
    pub batch: String,
    pub first_errors: Vec<String>,
    /// Connections lost (restart, killed server) and opened again.
    pub reconnects: usize,
    /// Per reconnect: the time between the last frame before it and the
    /// first frame after it, as the client saw it.
    pub reconnect_gaps_ms: Vec<f64>,
    /// With --interval-ms: frames the server superseded, and the mean over
    /// clients of the final position's latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames_superseded: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_latency_ms: Option<f64>,
}

pub async fn run(args: BenchArgs) -> Result<Summary> {
    ensure!(args.clients > 0, "--clients must be at least 1");
    let batch = match args.batch.as_str() {
        "all" => usize::MAX,
        n => n.parse::<usize>().ok().filter(|&n| n > 0).context("--batch must be a positive number or `all`")?,
    };
    let mut catalogues = Vec::new();
    for video in &args.video {
        catalogues.push(load_frames(&args, video).await?);
    }
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let plans: Vec<(String, Vec<(usize, FrameRef)>)> = (0..args.clients)
        .map(|client| {
            let which = client % args.video.len();
            let seed = seed.wrapping_add(client as u64);
            (args.video[which].clone(), plan(&catalogues[which], args.pattern, args.frames, seed))
        })
        .collect();
    let total: usize = plans.iter().map(|(_, frames)| frames.len()).sum();
    let progress = ProgressBar::new(total as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} frames {per_sec} eta {eta}").expect("valid template"),
    );
    if let Some(dir) = &args.output {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let timeout = Duration::from_secs(args.timeout_secs);
    if let Some(interval) = args.interval_ms {
        return drag(&args, &catalogues, Duration::from_millis(interval.max(1)), timeout).await;
    }
    let started = Instant::now();
    let stop_at = args.duration_secs.map(|secs| started + Duration::from_secs(secs));
    let asking = Arc::new(Asking::from(&args));
    let tasks: Vec<_> = plans
        .into_iter()
        .enumerate()
        .map(|(client, (video, frames))| {
            let (url, output, progress, asking) =
                (args.url.clone(), args.output.clone(), progress.clone(), asking.clone());
            let read_delay = Duration::from_millis(args.read_delay_ms);
            tokio::spawn(async move {
                let pacing = Pacing { timeout, read_delay, stop_at };
                run_client(client, &url, &video, frames, batch, &asking, output, pacing, progress).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.context("a client task panicked")??);
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    Ok(summarise(&args, results, elapsed))
}

async fn drag(
    args: &BenchArgs,
    catalogues: &[Vec<FrameRef>],
    interval: Duration,
    timeout: Duration,
) -> Result<Summary> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|client| {
            let which = client % args.video.len();
            let frames: Vec<(u64, Option<u64>)> = catalogues[which].iter().map(|f| (f.offset, f.irap_offset)).collect();
            let (url, video, mode) = (args.url.clone(), args.video[which].clone(), args.mode.clone());
            let duration = Duration::from_secs(args.duration_secs.unwrap_or(5));
            tokio::spawn(async move {
                let drag = Drag {
                    url: &url,
                    video: &video,
                    frames: &frames,
                    mode: mode.as_deref(),
                    interval,
                    duration,
                    timeout,
                };
                drag.run().await
            })
        })
        .collect();
    let mut results: Vec<DragResult> = Vec::new();
    for task in tasks {
        results.push(task.await.context("a client task panicked")??);
    }
    let elapsed = started.elapsed();
    let clients = results.len().max(1) as f64;
    let mut summary = summarise(
        args,
        results
            .iter()
            .map(|r| ClientResult {
                requested: r.requested,
                received: r.received,
                errored: r.errored + r.superseded,
                bytes: r.bytes,
                latencies_ms: vec![r.final_latency_ms],
                errors: Vec::new(),
                reconnects: 0,
                reconnect_gaps_ms: Vec::new(),
            })
            .collect(),
        elapsed,
    );
    summary.frames_superseded = Some(results.iter().map(|r| r.superseded).sum());
    summary.final_latency_ms = Some(results.iter().map(|r| r.final_latency_ms).sum::<f64>() / clients);
    Ok(summary)
}

async fn load_frames(args: &BenchArgs, video: &str) -> Result<Vec<FrameRef>> {
    if let Some(path) = &args.frames_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let file: FramesFile =
            serde_json::from_str(&text).with_context(|| format!("{} is not an offsets file", path.display()))?;
        ensure!(!file.frames.is_empty(), "{} lists no frames", path.display());
        return Ok(file.frames);
    }
    let mut url = reqwest::Url::parse(&args.url).with_context(|| format!("{} is not a URL", args.url))?;
    let scheme = if url.scheme() == "wss" { "https" } else { "http" };
    url.set_scheme(scheme).map_err(|()| anyhow::anyhow!("{} is not a ws:// or wss:// URL", args.url))?;
    let base = url.path().strip_suffix("/ws").unwrap_or("").to_string();
    url.set_path(&format!("{base}/api/v1/index"));
    url.query_pairs_mut().append_pair("video", video);
    let response = reqwest::get(url.clone()).await.with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body = response.bytes().await?;
    ensure!(status.is_success(), "{url}: HTTP {status}: {}", String::from_utf8_lossy(&body));
    let index: FramesFile = serde_json::from_slice(&body).context("the server's index is not valid JSON")?;
    Ok(index.frames)
}

/// The frames one client asks for, labelled by their position in the catalogue.
fn plan(catalogue: &[FrameRef], pattern: Pattern, count: Option<usize>, seed: u64) -> Vec<(usize, FrameRef)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let numbered = |i: usize| (i, catalogue[i].clone());
    match pattern {
        Pattern::Sequential => {
            let count = count.unwrap_or(catalogue.len());
            (0..count).map(|i| numbered(i % catalogue.len())).collect()
        }
        Pattern::Random => {
            let count = count.unwrap_or(200);
            let mut order: Vec<usize> = (0..catalogue.len()).collect();
            let mut picked = Vec::with_capacity(count);
            while picked.len() < count {
                order.shuffle(&mut rng);
                picked.extend(order.iter().take(count - picked.len()).map(|&i| numbered(i)));
            }
            picked
        }
        Pattern::Scrub => {
            let count = count.unwrap_or(200);
            let last = catalogue.len() as i64 - 1;
            let mut position = rng.random_range(0..=last);
            (0..count)
                .map(|_| {
                    position = (position + rng.random_range(-30..=30)).clamp(0, last);
                    numbered(position as usize)
                })
                .collect()
        }
    }
}

/// A client's connection over time: when the last frame came, and since
/// when it has been cut off (from the last frame before the loss; from the
/// request when none had come), for the gap a reconnect costs.
#[derive(Default)]
struct Continuity {
    last_frame: Option<Instant>,
    lost_since: Option<Instant>,
    /// The first loss after the last answer of any kind: a server that
    /// keeps taking sessions and losing them answers nothing for ever.
    unanswered_since: Option<Instant>,
}

impl Continuity {
    /// The connection was lost; an error once nothing has been answered for `limit`.
    fn lost(&mut self, sent: Instant, limit: Duration) -> Result<()> {
        self.lost_since.get_or_insert(self.last_frame.unwrap_or(sent));
        let since = *self.unanswered_since.get_or_insert_with(Instant::now);
        ensure!(
            since.elapsed() <= limit,
            "the connection keeps being lost with no answer for {} s",
            since.elapsed().as_secs()
        );
        Ok(())
    }

    /// An answer came (a frame when `frame`); the gap since the loss, if
    /// this is the first frame after one.
    fn answered(&mut self, frame: bool) -> Option<Duration> {
        self.unanswered_since = None;
        if !frame {
            return None;
        }
        let now = Instant::now();
        self.last_frame = Some(now);
        self.lost_since.take().map(|since| now.saturating_duration_since(since))
    }
}

/// How a closed-loop client paces itself.
/// What every request carries besides its frames.
struct Asking {
    mode: Option<String>,
    /// The `output` object, when any option was given.
    output: Option<Value>,
    /// File name extension of saved frames.
    extension: String,
}

impl From<&BenchArgs> for Asking {
    fn from(args: &BenchArgs) -> Self {
        let mut output = serde_json::Map::new();
        for (name, value) in [
            ("width", args.width.map(Value::from)),
            ("height", args.height.map(Value::from)),
            ("format", args.format.clone().map(Value::from)),
            ("quality", args.quality.map(Value::from)),
        ] {
            if let Some(value) = value {
                output.insert(name.into(), value);
            }
        }
        let extension = match args.format.as_deref() {
            None | Some("jpeg") => "jpg".to_string(),
            Some(other) => other.to_string(),
        };
        Self { mode: args.mode.clone(), output: (!output.is_empty()).then_some(Value::Object(output)), extension }
    }
}

struct Pacing {
    /// Longest wait for any one answer (or reconnect).
    timeout: Duration,
    /// Pause after every answer (a slow reader).
    read_delay: Duration,
    /// Ask for nothing new after this.
    stop_at: Option<Instant>,
}

#[allow(clippy::too_many_arguments)]
async fn run_client(
    client: usize,
    url: &str,
    video: &str,
    frames: Vec<(usize, FrameRef)>,
    batch: usize,
    asking: &Asking,
    output: Option<PathBuf>,
    pacing: Pacing,
    progress: ProgressBar,
) -> Result<ClientResult> {
    let mut session = Session::open(url, video, pacing.timeout).await?;
    let mut result = ClientResult::default();
    let mut continuity = Continuity::default();
    // Frames are labelled with their place in the plan, unique even when the plan repeats a frame.
    let size = batch.min(frames.len()).max(1);
    for (first, chunk) in (0..).step_by(size).zip(frames.chunks(size)) {
        if pacing.stop_at.is_some_and(|stop| Instant::now() >= stop) {
            break;
        }
        let mut unanswered: Vec<usize> = (first..first + chunk.len()).collect();
        result.requested += chunk.len();
        let sent = Instant::now();
        while !unanswered.is_empty() {
            let request = frames_request(&frames, &unanswered, asking);
            let lost = if session.send_json(&request).await.is_ok() {
                answer_loop(
                    &mut session,
                    &mut unanswered,
                    &frames,
                    &mut result,
                    output.as_deref().map(|dir| (dir, asking.extension.as_str())),
                    client,
                    &pacing,
                    sent,
                    &progress,
                    &mut continuity,
                )
                .await?
            } else {
                Some("the connection broke while sending".to_string())
            };
            if let Some(reason) = lost {
                tracing::info!(client, reason, "reconnecting");
                continuity.lost(sent, pacing.timeout)?;
                session.reconnect().await?;
            }
        }
    }
    result.reconnects = session.reconnects;
    session.close().await;
    Ok(result)
}

/// A `RequestFrames` for the planned frames `which`.
fn frames_request(frames: &[(usize, FrameRef)], which: &[usize], asking: &Asking) -> Value {
    let entries: Vec<Value> = which
        .iter()
        .map(|&planned| {
            let frame = &frames[planned].1;
            let mut entry = json!({"offset": frame.offset, "index": planned});
            if let Some(irap) = frame.irap_offset {
                entry["irap_offset"] = json!(irap);
            }
            entry
        })
        .collect();
    let mut request = json!({"type": "RequestFrames", "frames": entries});
    if let Some(mode) = &asking.mode {
        request["mode"] = json!(mode);
    }
    if let Some(output) = &asking.output {
        request["output"] = output.clone();
    }
    request
}

/// Reads answers until every frame of `unanswered` has one (`None`) or the
/// connection is lost (`Some(reason)`; what is left stays in `unanswered`).
#[allow(clippy::too_many_arguments)]
async fn answer_loop(
    session: &mut Session,
    unanswered: &mut Vec<usize>,
    frames: &[(usize, FrameRef)],
    result: &mut ClientResult,
    save: Option<(&std::path::Path, &str)>,
    client: usize,
    pacing: &Pacing,
    sent: Instant,
    progress: &ProgressBar,
    continuity: &mut Continuity,
) -> Result<Option<String>> {
    while !unanswered.is_empty() {
        let (header, jpeg) = match session.next_answer().await? {
            Answer::Lost(reason) => return Ok(Some(reason)),
            Answer::Frame { header, image } => (header, Some(image)),
            Answer::FrameError(header) => (header, None),
        };
        let planned = header["index"].as_u64().map(|label| label as usize);
        let Some(at) = planned.and_then(|planned| unanswered.iter().position(|&p| p == planned)) else {
            bail!("an answer for a frame not asked for: {header}");
        };
        let planned = unanswered.remove(at);
        if let Some(gap) = continuity.answered(jpeg.is_some()) {
            result.reconnect_gaps_ms.push(gap.as_secs_f64() * 1000.0);
        }
        match jpeg {
            Some(jpeg) => {
                result.latencies_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
                result.received += 1;
                result.bytes += jpeg.len() as u64;
                if let Some((dir, extension)) = save {
                    let name = format!("client{client:02}_frame{:06}.{extension}", frames[planned].0);
                    tokio::fs::write(dir.join(name), &jpeg).await?;
                }
            }
            None => {
                result.errored += 1;
                if result.errors.len() < 5 {
                    result.errors.push(format!("{}: {}", header["error"], header["message"]));
                }
            }
        }
        progress.inc(1);
        if !pacing.read_delay.is_zero() {
            tokio::time::sleep(pacing.read_delay).await;
        }
    }
    Ok(None)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summarise(args: &BenchArgs, results: Vec<ClientResult>, elapsed: Duration) -> Summary {
    let mut latencies: Vec<f64> = results.iter().flat_map(|r| r.latencies_ms.iter().copied()).collect();
    latencies.sort_by(f64::total_cmp);
    let received: usize = results.iter().map(|r| r.received).sum();
    let seconds = elapsed.as_secs_f64();
    Summary {
        frames_requested: results.iter().map(|r| r.requested).sum(),
        frames_received: received,
        frames_errored: results.iter().map(|r| r.errored).sum(),
        total_time_ms: seconds * 1000.0,
        average_fps: if seconds > 0.0 { received as f64 / seconds } else { 0.0 },
        latency_avg_ms: if latencies.is_empty() { 0.0 } else { latencies.iter().sum::<f64>() / latencies.len() as f64 },
        latency_min_ms: latencies.first().copied().unwrap_or(0.0),
        latency_max_ms: latencies.last().copied().unwrap_or(0.0),
        latency_p50_ms: percentile(&latencies, 50.0),
        latency_p95_ms: percentile(&latencies, 95.0),
        latency_p99_ms: percentile(&latencies, 99.0),
        total_bytes: results.iter().map(|r| r.bytes).sum(),
        clients: args.clients,
        pattern: args.pattern,
        batch: args.batch.clone(),
        first_errors: results.iter().flat_map(|r| r.errors.iter().cloned()).take(5).collect(),
        reconnects: results.iter().map(|r| r.reconnects).sum(),
        reconnect_gaps_ms: results.iter().flat_map(|r| r.reconnect_gaps_ms.iter().copied()).collect(),
        frames_superseded: None,
        final_latency_ms: None,
    }
}

impl Summary {
    /// The Stage 1 text summary.
    pub fn print(&self) {
        println!("Frames requested: {}", self.frames_requested);
        println!("Frames received:  {}", self.frames_received);
        println!("Frames errored:   {}", self.frames_errored);
        println!("Total time:       {:.3} s", self.total_time_ms / 1000.0);
        println!("Average FPS:      {:.1}", self.average_fps);
        println!("Total bytes:      {} ({:.1} MiB)", self.total_bytes, self.total_bytes as f64 / 1048576.0);
        println!(
            "Latency avg/min/max: {:.2} / {:.2} / {:.2} ms",
            self.latency_avg_ms, self.latency_min_ms, self.latency_max_ms
        );
        println!(
            "Latency p50/p95/p99: {:.2} / {:.2} / {:.2} ms",
            self.latency_p50_ms, self.latency_p95_ms, self.latency_p99_ms
        );
        if let (Some(superseded), Some(latency)) = (self.frames_superseded, self.final_latency_ms) {
            println!("Superseded:       {superseded}");
            println!("Final position:   {latency:.2} ms");
        }
        if self.reconnects > 0 {
            let worst = self.reconnect_gaps_ms.iter().copied().fold(0.0, f64::max);
            println!("Reconnects:       {} (longest gap between frames {worst:.0} ms)", self.reconnects);
        }
        for error in &self.first_errors {
            println!("error: {error}");
        }
    }
}
