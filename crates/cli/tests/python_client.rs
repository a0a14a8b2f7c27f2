//! The Python client (`clients/python`) installed with pip into a virtual
//! environment under target/ (once; PyPI for numpy, Pillow, websockets and
//! pytest) and its pytest suite run against a real server over the
//! generated fixtures, 8-bit and 10-bit; its token test against a server
//! that asks for one.

mod common;

use common::{mint, serve_generated};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The virtual environment's python, with the client (as it is now) and
/// pytest installed; once per test process (tests run on parallel threads).
fn python_with_client(root: &Path) -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| install(root)).clone()
}

fn install(root: &Path) -> PathBuf {
    let venv = root.join("target/python-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    }
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("{}[test]", root.join("clients/python").display())));
    python
}

#[test]
fn the_python_client_gets_exact_frames() {
    let root = testkit::workspace_root();
    let python = python_with_client(&root);
    let names = ["open_gop_bframes.mp4", "main10_bt709.mp4"];
    let (server, _storage) = serve_generated("python-client", &names, &[]);
    let videos: Vec<String> = names
        .iter()
        .map(|name| {
            let fixture = testkit::fixtures::generated_named(name).unwrap();
            let (matrix, range) =
                testkit::reference::player_colour(&testkit::reference::stream_info(&fixture.path).unwrap());
            format!("videos/{name}|{}|{matrix}|{range}", fixture.path.display())
        })
        .collect();
    run(Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("clients/python/tests"))
        .env("BUCKET_STREAMER_URL", format!("http://127.0.0.1:{}", server.port))
        .env("BUCKET_STREAMER_VIDEOS", videos.join(";")));
}

#[test]
fn the_python_client_passes_its_token() {
    const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";
    let mint = |prefix: &str| mint(SECRET, &["token", "--prefix", prefix, "--ttl", "600"]);
    let root = testkit::workspace_root();
    let python = python_with_client(&root);
    let name = "open_gop_bframes.mp4";
    let (server, _storage) = serve_generated("python-client-token", &[name], &["--auth-jwt-secret", SECRET]);
    let fixture = testkit::fixtures::generated_named(name).unwrap();
    let (matrix, range) = testkit::reference::player_colour(&testkit::reference::stream_info(&fixture.path).unwrap());
    run(Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "token"])
        .arg(root.join("clients/python/tests"))
        .env("BUCKET_STREAMER_URL", format!("http://127.0.0.1:{}", server.port))
        .env("BUCKET_STREAMER_VIDEOS", format!("videos/{name}|{}|{matrix}|{range}", fixture.path.display()))
        .env("BUCKET_STREAMER_TOKEN", mint("videos/"))
        .env("BUCKET_STREAMER_OTHER_TOKEN", mint("cams/")));
}
