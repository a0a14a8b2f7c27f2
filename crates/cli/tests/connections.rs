//! Connections are bounded: a WebSocket refused at --max-sessions is closed
//! (not kept alive), a flood of silent connections is cut at
//! --max-connections and closed after the header timeout, an idle kept-alive
//! connection is closed too; the server's file descriptors stay flat.

mod common;

use common::{metric, serve_generated};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use testkit::processes::Running;

/// True when the server closes `stream` within `limit` (reads reach EOF).
fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
    false
}

fn upgrade(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream
}

fn fds_settle_to(server: &Running, at_most: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let open = server.open_fds();
        if open <= at_most || Instant::now() > deadline {
            return open;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn refused_sessions_are_closed_and_descriptors_stay_flat() {
    let (server, _root) = serve_generated("connections-refused", &["no_bframes.mp4"], &["--max-sessions", "1"]);
    let _session = testkit::ws::Client::connect(&server.ws_url()).unwrap();
    let baseline = server.open_fds();
    // The refused clients keep their end open: the server must close its own.
    let mut refused = Vec::new();
    for attempt in 0..2000 {
        let mut stream = upgrade(server.port);
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        assert_eq!(&head[9..12], b"503", "attempt {attempt}");
        assert!(closed_by_server(&mut stream, Duration::from_secs(5)), "attempt {attempt}: the refusal closes");
        refused.push(stream);
    }
    let open = fds_settle_to(&server, baseline + 16, Duration::from_secs(5));
    assert!(open <= baseline + 16, "2000 refusals left {open} descriptors open (baseline {baseline})");
}

#[test]
fn silent_and_idle_connections_are_bounded_and_closed() {
    let (server, _root) = serve_generated(
        "connections-flood",
        &["no_bframes.mp4"],
        &["--max-connections", "200", "--http-header-timeout-secs", "2"],
    );
    let baseline = server.open_fds();
    let mut flood: Vec<TcpStream> =
        (0..1000).map(|_| TcpStream::connect(("127.0.0.1", server.port)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = server.open_fds();
    assert!(during <= baseline + 200 + 16, "{during} descriptors with 1000 silent clients (limit 200)");
    // Those let in say nothing: the header timeout closes them.
    let closed = flood.iter_mut().map(|stream| closed_by_server(stream, Duration::from_secs(6))).filter(|&c| c).count();
    assert_eq!(closed, flood.len(), "every silent connection is closed");
    // (While the 200 were held, nobody else could connect: only now can the metrics be read.)
    let refused = metric(&server, "bucket_streamer_http_connections_refused_total");
    assert!(refused >= 100.0, "the limit turned connections away: {refused} refused");
    let after = fds_settle_to(&server, baseline + 16, Duration::from_secs(5));
    assert!(after <= baseline + 16, "{after} descriptors after the flood (baseline {baseline})");

    // One request, then silence on a kept-alive connection: closed after the timeout too.
    let mut idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = [0u8; 12];
    idle.read_exact(&mut answer).unwrap();
    assert_eq!(&answer[9..12], b"200");
    let started = Instant::now();
    assert!(closed_by_server(&mut idle, Duration::from_secs(6)), "an idle kept-alive connection is closed");
    assert!(started.elapsed() >= Duration::from_secs(1), "not before the timeout");
    // And the server still answers.
    assert_eq!(testkit::processes::http_get(server.port, "/healthz").unwrap().status, 200);
}
