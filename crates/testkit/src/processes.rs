//! Real processes for end-to-end tests: the bucket-streamer server and an
//! S3-compatible server (`s3s-fs`), each on a loopback port it picks itself, killed when
//! dropped. Also a minimal HTTP/1.1 client so tests need no HTTP library.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A child process killed on drop.
pub struct Running {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Running {
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the process in bytes (Linux), 0 when unknown.
    pub fn rss_bytes(&self) -> u64 {
        self.memory_status("VmRSS:")
    }

    /// The most resident memory the process has had, in bytes (Linux), 0 when unknown.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.memory_status("VmHWM:")
    }

    fn memory_status(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        kib.unwrap_or(0) * 1024
    }

    /// Open file descriptors of the process (Linux), 0 when unknown.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |dir| dir.count())
    }

    /// Sends SIGTERM (a rolling restart's stop).
    pub fn terminate(&self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
    }

    /// Waits up to `limit` for the process to exit; true when it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !self.alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A log file under target/test-logs, appended to (a server restarted on the
/// same port keeps the earlier run's lines), and its length before this run.
fn log_file(name: &str) -> Result<(PathBuf, std::fs::File, u64)> {
    let dir = crate::workspace_root().join("target/test-logs");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.log"));
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    let start = file.metadata()?.len();
    Ok((path, file, start))
}

/// A log name no other process of this test run uses.
fn unique_log_name(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{what}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Spawns `command` logging to `log` and waits until its log (past `start`)
/// has a line containing `marker` and the loopback address it listens on.
/// The process picks its own port (`:0`) and says which: choosing a free
/// port here and handing it over would race with every other test doing the
/// same, and a test could end up talking to another test's server.
fn spawn_and_wait(
    mut command: Command,
    log: (PathBuf, std::fs::File, u64),
    marker: &str,
    what: &str,
) -> Result<Running> {
    let (path, file, start) = log;
    let child = command
        .stdout(file.try_clone()?)
        .stderr(file)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let mut running = Running { child, port: 0, log: path };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let exited = !running.alive();
        let text = std::fs::read(&running.log).unwrap_or_default();
        let text = String::from_utf8_lossy(text.get(start as usize..).unwrap_or_default());
        if let Some(port) = text.lines().filter(|line| line.contains(marker)).find_map(listening_port) {
            running.port = port;
            return Ok(running);
        }
        if exited {
            bail!("{what} exited during start-up:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} did not say where it listens within 30 s (log: {})", running.log.display())
}

/// The port of the first `127.0.0.1:<port>` in a log line.
fn listening_port(line: &str) -> Option<u16> {
    let after = &line[line.find("127.0.0.1:")? + "127.0.0.1:".len()..];
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&port| port != 0)
}

fn server_command(binary: &Path, listen_addr: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["serve", "--listen-addr", listen_addr])
        .args(args)
        .envs(env.iter().copied())
        .env_remove("AWS_PROFILE")
        .env_remove("LOG_LEVEL");
    command
}

/// Starts the server binary with `args` (plus `--listen-addr`) on a port of
/// its own choosing and waits until it listens.
pub fn start_server(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Running> {
    let command = server_command(binary, "127.0.0.1:0", args, env);
    spawn_and_wait(command, log_file(&unique_log_name("server"))?, "listening", "the server")
}

/// Like `start_server`, on a given port (to restart a server where clients expect it).
pub fn start_server_on(port: u16, binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Running> {
    let command = server_command(binary, &format!("127.0.0.1:{port}"), args, env);
    spawn_and_wait(command, log_file(&format!("server-port-{port}"))?, "listening", "the server")
}

pub const S3_ACCESS_KEY: &str = "bucketstreamer";
pub const S3_SECRET_KEY: &str = "bucketstreamer-secret";

fn s3s_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("S3S_FS_BIN") {
        return Ok(PathBuf::from(path));
    }
    let mut candidates: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).map(|dir| dir.join("s3s-fs")).collect();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/s3s-fs"));
    }
    candidates.into_iter().find(|path| path.is_file()).context(
        "s3s-fs is not installed: run `cargo install s3s-fs@0.14.1 --features binary --locked` (scripts/test does)",
    )
}

/// Starts `s3s-fs` serving `root` (each sub-directory is a bucket), with SigV4 auth.
pub fn start_s3(root: &Path) -> Result<Running> {
    let mut command = Command::new(s3s_binary()?);
    command
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
        .arg(root)
        // s3s-fs says where it listens only at info level.
        .env("RUST_LOG", "s3s_fs=info")
        .env("NO_COLOR", "1");
    spawn_and_wait(command, log_file(&unique_log_name("s3s-fs"))?, "server is running at", "s3s-fs")
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| format!("not JSON: {}", self.text()))
    }
}

/// `GET` over a fresh connection; `target` is the path and query.
pub fn http_get(port: u16, target: &str) -> Result<HttpResponse> {
    http_get_with(port, target, &[])
}

/// `GET` with extra request headers.
pub fn http_get_with(port: u16, target: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    write!(stream, "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no HTTP header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status =
        lines.next().and_then(|line| line.split(' ').nth(1)).and_then(|s| s.parse().ok()).context("bad status")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").context("bad chunk")?;
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end])?.trim(), 16)?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
