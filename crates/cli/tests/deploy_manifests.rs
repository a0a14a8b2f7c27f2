//! The deployment files users apply: every Kustomize overlay under `deploy/`
//! renders with `kubectl kustomize` and validates strictly against a pinned
//! Kubernetes schema (`deploy/tests/check_manifests.py`, which also asserts
//! the hash routing, probes, drain timing and non-root settings), and the
//! docker-compose nginx config passes `nginx -t` with the shared locations.

use std::process::Command;

fn missing(tool: &str, check: &[&str]) -> Option<String> {
    let works = Command::new(tool).args(check).output().is_ok_and(|out| out.status.success());
    (!works).then(|| format!("{tool} is not available"))
}

#[test]
fn every_overlay_renders_and_validates_against_kubernetes_1_31() {
    let reason = missing("kubectl", &["version", "--client"]).or_else(|| {
        missing("python3", &["-c", "import kubernetes_validate, yaml"])
            .map(|_| "the kubernetes-validate package is missing (scripts/test installs it with pip)".to_string())
    });
    if let Some(reason) = reason {
        assert!(std::env::var_os("CI").is_none(), "CI must check the manifests: {reason}");
        eprintln!("note: manifest test skipped: {reason}");
        return;
    }
    let root = testkit::workspace_root();
    let output = Command::new("python3")
        .arg(root.join("deploy/tests/check_manifests.py"))
        .args(["--kubernetes-version", "1.31.0"])
        .output()
        .expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{text}");
    assert!(text.contains("deploy/overlays/dev:") && text.contains("deploy/overlays/aws:"), "{text}");
}

#[test]
fn the_compose_nginx_config_is_valid() {
    let Ok(nginx) = testkit::nginx::binary() else {
        assert!(std::env::var_os("CI").is_none(), "CI must check the nginx config");
        eprintln!("note: nginx missing, compose config not checked");
        return;
    };
    let root = testkit::workspace_root();
    let dir = root.join(format!("target/test-data/compose-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The compose service names resolve only inside compose: point them at loopback.
    let config = std::fs::read_to_string(root.join("deploy/compose/nginx.conf"))
        .unwrap()
        .replace("server1:3000", "127.0.0.1:3001")
        .replace("server2:3000", "127.0.0.1:3002")
        .replace("server3:3000", "127.0.0.1:3003")
        .replace(
            "/etc/nginx/bucket-streamer/locations.conf",
            root.join("deploy/nginx/locations.conf").to_str().unwrap(),
        )
        .replace("/var/cache/nginx/frames", dir.join("cache").to_str().unwrap());
    let file = dir.join("nginx.conf");
    std::fs::write(&file, config).unwrap();
    let output = Command::new(nginx)
        .args(["-t", "-p", dir.to_str().unwrap(), "-c", file.to_str().unwrap()])
        .args(["-e", dir.join("error.log").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "nginx -t: {}", String::from_utf8_lossy(&output.stderr));
}
