//! Authentication over real sockets: with `--auth-jwt-secret` every way in
//! is refused without a credential (401), outside a token's prefix (403) or
//! from another site's page (403), and each way that should work does:
//! bearer header, `access_token` on `/ws`, signed frame URLs, open health
//! probes. Tokens and URLs are minted with the binary's own `token` and
//! `sign-url` commands, as an operator would.

mod common;

use common::{binary, serve_generated};
use serde_json::json;
use std::process::Command;
use testkit::processes::{http_get, http_get_with};
use testkit::ws::{Answer, Client};

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";
const VIDEO: &str = "videos/no_bframes.mp4";

fn mint(args: &[&str]) -> String {
    common::mint(SECRET, args)
}

fn ws_status(port: u16, target: &str, headers: &[(&str, &str)]) -> u16 {
    let upgrade = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let all: Vec<(&str, &str)> = upgrade.iter().chain(headers).copied().collect();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let extra: String = all.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    std::io::Write::write_all(
        &mut stream,
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n").as_bytes(),
    )
    .unwrap();
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut stream, &mut head).unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

#[test]
fn every_way_in_needs_a_valid_credential() {
    let (server, _root) = serve_generated(
        "auth",
        &["no_bframes.mp4"],
        &["--auth-jwt-secret", SECRET, "--allowed-origins", "https://app.example"],
    );
    let port = server.port;
    let everything = mint(&["token", "--ttl", "600"]);
    let cams_only = mint(&["token", "--prefix", "cams/", "--ttl", "600"]);
    let expired = {
        let auth = server::auth::Auth::new(SECRET);
        auth.token(None, server::auth::now() - 5)
    };
    let forged =
        server::auth::Auth::new("another-secret-another-secret-another").token(None, server::auth::now() + 600);
    let bearer = |token: &str| format!("Bearer {token}");

    // Health probes stay open; the API does not.
    assert_eq!(http_get(port, "/healthz").unwrap().status, 200);
    let index = format!("/api/v1/videos/{VIDEO}/index");
    let routed_index = format!("/api/v1/index?video={VIDEO}");
    let frame = format!("/api/v1/frame?video={VIDEO}&frame=5");
    let thumbnails = format!("/api/v1/thumbnails?video={VIDEO}&width=64&count=3");
    let sprite = format!("/api/v1/thumbnails/sprite?video={VIDEO}&width=64&count=3");
    for target in
        ["/api/v1/videos", index.as_str(), routed_index.as_str(), frame.as_str(), thumbnails.as_str(), sprite.as_str()]
    {
        let refused = http_get(port, target).unwrap();
        assert_eq!(refused.status, 401, "{target}: {}", refused.text());
        assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
        for token in [&expired, &forged, &"garbage".to_string()] {
            let refused = http_get_with(port, target, &[("Authorization", &bearer(token))]).unwrap();
            assert_eq!(refused.status, 401, "{target} with a bad token");
        }
        let allowed = http_get_with(port, target, &[("Authorization", &bearer(&everything))]).unwrap();
        assert_eq!(allowed.status, 200, "{target}: {}", allowed.text());
        if target != "/api/v1/videos" {
            let outside = http_get_with(port, target, &[("Authorization", &bearer(&cams_only))]).unwrap();
            assert_eq!(
                (outside.status, outside.json().unwrap()["error"].clone()),
                (403, json!("forbidden")),
                "{target}"
            );
        }
    }
    assert!(http_get_with(port, "/api/v1/videos", &[("Authorization", &bearer(&expired))])
        .unwrap()
        .text()
        .contains("expired"));
    let listing = http_get_with(port, "/api/v1/videos", &[("Authorization", &bearer(&cams_only))]).unwrap();
    assert_eq!(listing.json().unwrap()["videos"], json!([]), "a prefixed token lists only its prefix");
    let listing =
        http_get_with(port, "/api/v1/videos?prefix=videos", &[("Authorization", &bearer(&cams_only))]).unwrap();
    assert_eq!(listing.status, 403);

    // Signed frame URLs: exactly that frame, until it expires.
    let signed = mint(&["sign-url", &frame, "--ttl", "600"]);
    let response = http_get(port, &signed).unwrap();
    assert_eq!((response.status, response.header("content-type")), (200, Some("image/jpeg")));
    // The URL is the credential, so shared caches may keep it; a frame a
    // token was needed for only the client's own cache may keep.
    assert!(response.header("cache-control").is_some_and(|c| c.starts_with("public")), "{:?}", response.headers);
    let with_token = http_get_with(port, &frame, &[("Authorization", &bearer(&everything))]).unwrap();
    assert_eq!(with_token.status, 200);
    assert!(with_token.header("cache-control").is_some_and(|c| c.starts_with("private")), "{:?}", with_token.headers);
    let other_frame = signed.replace("frame=5", "frame=6");
    assert_eq!(http_get(port, &other_frame).unwrap().status, 401, "the signature covers the frame");
    let stale = server::auth::Auth::new(SECRET).sign_url(&format!("{frame}&exp=1000"));
    assert!(http_get(port, &stale).unwrap().text().contains("expired"));
    // A signed thumbnail strip: its map, and the sprite the map names (same
    // query and signature), but no other strip.
    let signed = mint(&["sign-url", &thumbnails, "--ttl", "600"]);
    let map = http_get(port, &signed).unwrap();
    assert_eq!(map.status, 200, "{}", map.text());
    let named = map.json().unwrap()["sprite"].as_str().unwrap().to_string();
    let response = http_get(port, &named).unwrap();
    assert_eq!((response.status, response.header("content-type")), (200, Some("image/jpeg")), "{named}");
    assert_eq!(http_get(port, &signed.replace("width=64", "width=96")).unwrap().status, 401);
    assert_eq!(http_get(port, &named.replace("count=3", "count=4")).unwrap().status, 401);

    // The WebSocket: a token in the query (browsers) or the header; another site's page is refused.
    assert_eq!(ws_status(port, "/ws", &[]), 401);
    assert_eq!(ws_status(port, &format!("/ws?access_token={expired}"), &[]), 401);
    assert_eq!(ws_status(port, &format!("/ws?access_token={everything}"), &[("Origin", "https://evil.example")]), 403);
    assert_eq!(ws_status(port, &format!("/ws?access_token={everything}"), &[("Origin", "https://app.example")]), 101);
    let same_origin = format!("http://127.0.0.1:{port}");
    assert_eq!(ws_status(port, &format!("/ws?access_token={everything}"), &[("Origin", &same_origin)]), 101);
    assert_eq!(ws_status(port, "/ws", &[("Authorization", &bearer(&everything))]), 101);

    let (_, frames) = common::fetch_index_with(&server, VIDEO, &[("Authorization", &bearer(&everything))]).unwrap();
    let mut client = Client::connect(&format!("{}?access_token={everything}", server.ws_url())).unwrap();
    let set = client.set_video(VIDEO).unwrap();
    assert_eq!(set["ok"], true, "{set}");
    client.send_json(&json!({"type": "RequestFrames", "frames": [{"offset": frames[0].offset, "index": 0}]})).unwrap();
    assert!(matches!(client.receive_answer().unwrap(), Answer::Frame { .. }));

    let mut limited = Client::connect(&format!("{}?access_token={cams_only}", server.ws_url())).unwrap();
    let set = limited.set_video(VIDEO).unwrap();
    assert_eq!(set["ok"], false);
    assert!(set["error"].as_str().unwrap().starts_with("forbidden"), "{set}");
    limited
        .send_json(
            &json!({"type": "RequestFrames", "video": VIDEO, "frames": [{"offset": frames[3].offset, "index": 3}]}),
        )
        .unwrap();
    match limited.receive_answer().unwrap() {
        Answer::Error(error) => assert_eq!(error["error"], "forbidden", "{error}"),
        Answer::Frame { header, .. } => panic!("a frame outside the token's prefix was served: {header}"),
    }
    // The video in the URL is checked like SetVideo: refused inside the session.
    let mut routed = Client::connect(&format!("{}?access_token={cams_only}&video={VIDEO}", server.ws_url())).unwrap();
    let set = routed.receive_json().unwrap();
    assert_eq!((set["type"].as_str(), set["ok"].as_bool()), (Some("VideoSet"), Some(false)), "{set}");
    assert!(set["error"].as_str().unwrap().starts_with("forbidden"), "{set}");
    routed.send_json(&json!({"type": "RequestFrames", "frames": [{"offset": frames[0].offset, "index": 0}]})).unwrap();
    match routed.receive_answer().unwrap() {
        Answer::Error(error) => assert_eq!(error["error"], "no_video", "{error}"),
        Answer::Frame { header, .. } => panic!("a refused video served a frame: {header}"),
    }
}

#[test]
fn a_short_secret_is_refused_at_start() {
    let output =
        Command::new(binary()).args(["serve", "--local-path", ".", "--auth-jwt-secret", "short"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 32 bytes"));
}
