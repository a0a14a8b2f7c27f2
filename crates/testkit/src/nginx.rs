//! Debian's nginx in front of real server processes, with the routing of
//! `deploy/nginx/locations.conf` (the file users deploy) in the config of
//! `deploy/nginx/loopback.conf.template` (shared with scripts/bench-routing): the upstream is
//! hashed on `$arg_video` (consistent), WebSockets are upgraded, and
//! `/api/v1/frame` goes through a `proxy_cache`. Runs as the test's own
//! user (`master_process off`), with every path under a scratch folder.

use crate::processes::Running;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

/// The nginx binary (`NGINX` overrides), or why there is none.
pub fn binary() -> Result<PathBuf> {
    let path = std::env::var_os("NGINX").map_or_else(|| PathBuf::from("/usr/sbin/nginx"), PathBuf::from);
    if path.is_file() {
        Ok(path)
    } else {
        bail!("nginx is not installed at {} (scripts/install-deps installs Debian's nginx)", path.display())
    }
}

impl Nginx {
    /// Starts nginx on a free loopback port in front of `backends` (ports).
    pub fn start(dir: &Path, backends: &[u16]) -> Result<Self> {
        let binary = binary()?;
        std::fs::create_dir_all(dir)?;
        let mut last_error = String::new();
        // The port is chosen here (nginx cannot say which one it took); a
        // clash with another test's process is retried on another port.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let config = dir.join("nginx.conf");
            std::fs::write(&config, config_text(dir, port, backends)?)?;
            let log = std::fs::File::create(dir.join("stderr.log"))?;
            let mut child = Command::new(&binary)
                .args(["-p", dir.to_str().context("utf-8 path")?, "-c", config.to_str().context("utf-8 path")?])
                .args(["-e", dir.join("error.log").to_str().context("utf-8 path")?])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("cannot start nginx")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!(
                        "nginx exited ({status}): {}{}",
                        std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default(),
                        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                    );
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(Self { child, port, dir: dir.to_path_buf() });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        bail!("nginx did not start: {last_error}")
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config: `deploy/nginx/loopback.conf.template` filled in, access log
/// with the upstream each request went to.
fn config_text(dir: &Path, port: u16, backends: &[u16]) -> Result<String> {
    let root = crate::workspace_root();
    let template = std::fs::read_to_string(root.join("deploy/nginx/loopback.conf.template"))?;
    let servers: Vec<String> =
        backends.iter().map(|backend| format!("        server 127.0.0.1:{backend} max_fails=0;")).collect();
    let d = dir.display().to_string();
    Ok(template
        .replace("@ACCESS_LOG@", &format!("{d}/access.log routing"))
        .replace("@DIR@", &d)
        .replace("@SERVERS@", &servers.join("\n"))
        .replace("@PORT@", &port.to_string())
        .replace("@LOCATIONS@", &root.join("deploy/nginx/locations.conf").display().to_string()))
}

/// The servers behind one nginx, restartable on their own ports.
pub struct Backends {
    pub servers: Vec<Running>,
    binary: PathBuf,
    args: Vec<String>,
}

impl Backends {
    /// Starts `count` servers of `binary` with `args` (each gets `--instance-id server<i>`).
    pub fn start(binary: &Path, count: usize, args: &[&str]) -> Result<Self> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut backends = Self { servers: Vec::new(), binary: binary.to_path_buf(), args };
        for i in 0..count {
            let args = backends.args_for(i);
            let server =
                crate::processes::start_server(binary, &args.iter().map(String::as_str).collect::<Vec<_>>(), &[])?;
            backends.servers.push(server);
        }
        Ok(backends)
    }

    fn args_for(&self, i: usize) -> Vec<String> {
        let mut args = self.args.clone();
        args.extend(["--instance-id".to_string(), format!("server{i}")]);
        args
    }

    pub fn ports(&self) -> Vec<u16> {
        self.servers.iter().map(|s| s.port).collect()
    }

    /// Starts server `i` again on its port (after a kill or a drain).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        let port = self.servers[i].port;
        let started = Instant::now();
        // The old process's socket may linger for a moment.
        loop {
            let args = self.args_for(i);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match crate::processes::start_server_on(port, &self.binary, &args, &[]) {
                Ok(server) => {
                    self.servers[i] = server;
                    return Ok(());
                }
                Err(error) if started.elapsed() > Duration::from_secs(10) => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}
