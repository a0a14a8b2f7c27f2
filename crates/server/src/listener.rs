//! The TCP accept loop (in place of `axum::serve`, which has no connection
//! limit or header timeout). Owns how many HTTP connections may be open at
//! once (one past the limit is closed at once, so a flood costs no file
//! descriptors), how long a client may take to send its request headers
//! (idle keep-alive connections included), and graceful shutdown: stop
//! accepting, let requests in progress finish, then return.
//!
//! A connection upgraded to a WebSocket leaves this loop's count; sessions
//! are bounded by `--max-sessions` instead.

use crate::metrics::{CONNECTIONS, CONNECTIONS_REFUSED};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// HTTP connections open at once.
    pub max_connections: usize,
    /// Time to send a request's headers, and the longest a kept-alive connection may sit idle.
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests
/// in progress finish for as long as `shutdown` answered.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: impl Future<Output = Duration>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    let drain = loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Out of descriptors or a transient network error: pause, never spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            drain = &mut shutdown => break drain,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!(CONNECTIONS_REFUSED).increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let _slot = slot;
            metrics::gauge!(CONNECTIONS).increment(1.0);
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            metrics::gauge!(CONNECTIONS).decrement(1.0);
        });
        while connections.try_join_next().is_some() {}
    };
    drop(listener); // new connections are refused from here on
    let _ = stop.send(true);
    let drained = tokio::time::timeout(drain, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::warn!("requests still running at the end of the drain time were dropped");
    }
}
