//! The container image users get (`Dockerfile`, runtime stage), built and run
//! here for real: the base `debian:bookworm-slim` is made from Debian's
//! packages (`scripts/base-image`, mmdebstrap) since Docker Hub is out of
//! reach, the binary this test suite built is copied in through the
//! Dockerfile's `prebuilt` stage (debug info stripped), `buildah bud
//! --isolation chroot` builds the image and `buildah run --isolation chroot`
//! starts it (`docker run` cannot start containers in this sandbox). The
//! server inside runs as the image's non-root user, answers `/health` and
//! serves a frame that matches FFmpeg's decode.

mod common;

use common::{binary, scratch_dir, small_rgb, stock, MIN_PSNR};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::image::{check_frame, factor_for};
use testkit::processes::http_get;

/// Why the image cannot be built here, if it cannot.
fn container_tools() -> Result<(), String> {
    for tool in ["buildah", "mmdebstrap", "objcopy"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output();
        if !found.is_ok_and(|out| out.status.success()) {
            return Err(format!("{tool} is not installed (scripts/install-deps installs it on Debian)"));
        }
    }
    let uid = Command::new("id").arg("-u").output().map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("building and running the image needs root (buildah --isolation chroot)".into());
    }
    Ok(())
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Removes the test's container and image whatever happens.
struct Cleanup {
    image: String,
    container: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(container) = &self.container {
            let _ = Command::new("buildah").args(["rm", container]).output();
        }
        let _ = Command::new("buildah").args(["rmi", "--force", &self.image]).output();
        let _ = Command::new("buildah").args(["rmi", "--prune"]).output();
    }
}

#[test]
fn the_runtime_image_runs_as_non_root_and_serves_an_exact_frame() {
    if let Err(reason) = container_tools() {
        assert!(std::env::var_os("CI").is_none(), "CI must build the image: {reason}");
        eprintln!("note: image test skipped: {reason}");
        return;
    }
    let root = testkit::workspace_root();
    run(&mut Command::new(root.join("scripts/base-image")));
    let staged = root.join("target/image/bucket-streamer");
    std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
    run(Command::new("objcopy").arg("--strip-debug").arg(binary()).arg(&staged));
    let image = format!("localhost/bucket-streamer:test-{}", std::process::id());
    let mut cleanup = Cleanup { image: image.clone(), container: None };
    run(Command::new("buildah").current_dir(&root).args([
        "bud",
        "--quiet",
        "--isolation",
        "chroot",
        "--build-arg",
        "BINARY_FROM=prebuilt",
        "--build-arg",
        "BINARY=target/image/bucket-streamer",
        "-t",
        &image,
        ".",
    ]));
    let size = run(Command::new("buildah").args(["images", "--format", "{{.Size}}", &image]));
    eprintln!("image {image}: {size}");
    let user =
        run(Command::new("buildah").args(["inspect", "--type", "image", "--format", "{{.OCIv1.Config.User}}", &image]));
    assert_eq!(user, "10001:10001", "the image runs as a non-root user");

    let data = scratch_dir("container-image");
    let fixture = testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap();
    stock(&data, std::slice::from_ref(&fixture));
    let container = run(Command::new("buildah").args(["from", "--quiet", &image]));
    cleanup.container = Some(container.clone());
    let log = data.join("server.log");
    let log_file = std::fs::File::create(&log).unwrap();
    // The image's own entrypoint and defaults (LOCAL_PATH=/data); only the
    // port is the test's (buildah's chroot shares the host's network).
    let mut server = Command::new("buildah")
        .args(["run", "--isolation", "chroot", "--env", "LISTEN_ADDR=127.0.0.1:0"])
        .arg("-v")
        .arg(format!("{}:/data:ro", data.display()))
        .args([&container, "--", "/usr/local/bin/bucket-streamer"])
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .expect("buildah run starts");
    let group = server.id();
    let stop = |signal: &str| {
        let _ = Command::new("kill").args([signal, "--", &format!("-{group}")]).status();
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(port) = text
            .lines()
            .filter(|line| line.contains("listening"))
            .find_map(|line| line.split("127.0.0.1:").nth(1)?.split(' ').next()?.parse::<u16>().ok())
        {
            break port;
        }
        if Instant::now() > deadline || server.try_wait().unwrap().is_some() {
            stop("-KILL");
            panic!("the container's server did not start:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let health = http_get(port, "/health").unwrap();
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));
    let uid = server_uid(group);
    let frame = http_get(port, "/api/v1/frame?video=videos/open_gop_bframes.mp4&frame=30").unwrap();
    stop("-TERM");
    let stopped = Instant::now();
    while server.try_wait().unwrap().is_none() && stopped.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop("-KILL");
    let _ = server.wait();
    assert_eq!(uid.as_deref(), Some("10001"), "the server runs as the image's user");
    assert_eq!(frame.status, 200, "{}", frame.text());
    let factor = factor_for(testkit::reference::stream_info(&fixture.path).unwrap().width as usize);
    let reference = testkit::reference::frames(&fixture.path, factor).unwrap();
    check_frame(&small_rgb(&frame.body, factor).unwrap(), &reference, 30, MIN_PSNR).unwrap();
}

/// The user id the server process in process group `group` runs as.
fn server_uid(group: u32) -> Option<String> {
    let found = Command::new("pgrep").args(["-g", &group.to_string(), "-x", "bucket-streamer"]).output().ok()?;
    let pid = String::from_utf8_lossy(&found.stdout).lines().next()?.trim().to_string();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .map(str::to_string)
}
