//! The demo's HTTP server: hyper's HTTP/1.1 connection driver, under limits that hold whatever
//! clients do (drop, stall, flood).
//!
//! - A request's header must arrive within [`HEADER_READ_TIMEOUT`] of the moment the
//!   connection waits for one: a fresh connection, or a kept-alive one after its last answer
//!   (hyper's `header_read_timeout` runs from there, so it is the idle timeout too). A
//!   connection that misses it is closed without an answer.
//! - At most [`MAX_CONNECTIONS`] are open. One more is accepted by closing the oldest *idle*
//!   one (no request in flight: kept alive, silent, or still sending its header); when every
//!   open connection has a request in flight, the new one is answered 503 and closed at once.
//!   So an idle flood never keeps `/api/health` out.
//! - On Ctrl-C / SIGTERM the listener closes, idle connections close at once, busy ones finish
//!   their request (no keep-alive); after [`SHUTDOWN_DEADLINE`] the server returns anyway.
//!
//! What hyper answers by itself is out of the router's reach: a request line or header it
//! cannot parse gets its automatic `400`, `414` or `431` with an empty body (hyper 1.x writes
//! those from `proto::h1::role::Server::on_error`, with no hook to change the body), and a
//! missed header deadline closes the connection without an answer.

use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// How long a connection may take to send a request's header (the whole request line and
/// headers), counted from when it is opened or its previous answer was sent.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections open at once (idle ones are closed, oldest first, to admit more).
pub const MAX_CONNECTIONS: usize = 256;

/// How long a stopping server waits for requests in flight before it returns anyway.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// Threads of tokio's blocking pool (inference): the models' [`super::PER_MODEL_JOBS`] each,
/// and two spare.
pub const BLOCKING_THREADS: usize = 3 * super::PER_MODEL_JOBS + 2;

/// The server's limits (the defaults are the constants above).
#[derive(Debug, Clone, Copy)]
pub struct ServeConfig {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_deadline: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            shutdown_deadline: SHUTDOWN_DEADLINE,
        }
    }
}

/// The demo's tokio runtime: worker threads for connections, and a blocking pool of
/// [`BLOCKING_THREADS`] for inference.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
}

/// One open connection: its requests in flight, and the signal that closes it.
#[derive(Default)]
struct Conn {
    in_flight: AtomicUsize,
    close: Notify,
}

/// Counts a request in flight on its connection while it lives.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn new(c: &Arc<Conn>) -> Self {
        c.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(c))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted in flight until it is sent (or dropped).
struct Answer {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Answer {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The open connections, oldest first.
#[derive(Default)]
struct Open {
    next: u64,
    conns: BTreeMap<u64, Arc<Conn>>,
}

impl Open {
    /// Registers a new connection; when `cap` are open, closes the oldest idle one first.
    /// `None` when all `cap` have a request in flight.
    fn admit(&mut self, cap: usize) -> Option<(u64, Arc<Conn>)> {
        if self.conns.len() >= cap {
            let idle = self
                .conns
                .iter()
                .find(|(_, c)| c.in_flight.load(Ordering::SeqCst) == 0)
                .map(|(&id, _)| id)?;
            if let Some(c) = self.conns.remove(&idle) {
                c.close.notify_one();
            }
        }
        let id = self.next;
        self.next += 1;
        let c = Arc::new(Conn::default());
        self.conns.insert(id, Arc::clone(&c));
        Some((id, c))
    }
}

/// Serves `router` on `listener` with the default limits until Ctrl-C or SIGTERM.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    serve_with(listener, router, ServeConfig::default(), shutdown_signal()).await
}

/// Serves `router` on `listener` under `cfg` until `stop` resolves, then drains (see the
/// module's notes) for at most `cfg.shutdown_deadline`.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    cfg: ServeConfig,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let open = Arc::new(Mutex::new(Open::default()));
    let (stopping, stop_rx) = watch::channel(false);
    let busy: Arc<[u8]> = refusal(cfg.max_connections).into();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout);
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // out of file descriptors and the like: wait for connections to close
                    eprintln!("demo: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let admitted = open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(cfg.max_connections);
        let Some((id, conn)) = admitted else {
            let busy = Arc::clone(&busy);
            tokio::spawn(async move {
                // a few hundred bytes: one write into a fresh socket's buffer
                let write = async {
                    loop {
                        stream.writable().await?;
                        match stream.try_write(&busy) {
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                            r => return r,
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
            });
            continue;
        };
        let tower = TowerToHyperService::new(router.clone());
        let counted = Arc::clone(&conn);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let in_flight = InFlight::new(&counted);
            let answer = hyper::service::Service::call(&tower, req);
            async move {
                // the request counts as in flight until its answer's body is sent
                let answer = answer.await?;
                Ok::<_, std::convert::Infallible>(answer.map(|body| Answer {
                    body,
                    _in_flight: in_flight,
                }))
            }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let (open, mut stop_rx) = (Arc::clone(&open), stop_rx.clone());
        tokio::spawn(async move {
            tokio::pin!(connection);
            let mut draining = false;
            loop {
                tokio::select! {
                    _ = connection.as_mut() => break,
                    _ = conn.close.notified() => break,
                    _ = stop_rx.changed(), if !draining => {
                        draining = true;
                        if conn.in_flight.load(Ordering::SeqCst) == 0 {
                            break;
                        }
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            open.lock()
                .unwrap_or_else(|e| e.into_inner())
                .conns
                .remove(&id);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    let deadline = tokio::time::Instant::now() + cfg.shutdown_deadline;
    loop {
        let left = open.lock().unwrap_or_else(|e| e.into_inner()).conns.len();
        if left == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "demo: {left} connections still busy after {} s; stopping anyway",
                cfg.shutdown_deadline.as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The answer to a connection over the cap when every open one is busy: 503 with the API's
/// JSON error, and the connection closed.
fn refusal(cap: usize) -> Vec<u8> {
    let body = serde_json::json!({
        "error": format!("the demo is busy: all {cap} connections it keeps open have a request in flight; try again in a moment")
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Resolves on Ctrl-C or (Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_idle_connection_makes_room() {
        let mut open = Open::default();
        let (a, ca) = open.admit(2).unwrap();
        let (_, cb) = open.admit(2).unwrap();
        let _busy = InFlight::new(&ca);
        // full: b (idle) is closed for c, a (busy) stays
        let (c, _) = open.admit(2).unwrap();
        assert_eq!(open.conns.keys().copied().collect::<Vec<_>>(), vec![a, c]);
        assert!(Arc::strong_count(&cb) == 1, "b is no longer registered");
        // full again, and c idle: c goes
        let (d, cd) = open.admit(2).unwrap();
        assert_eq!(open.conns.keys().copied().collect::<Vec<_>>(), vec![a, d]);
        // both busy: the next one is refused
        let busy_d = InFlight::new(&cd);
        assert!(open.admit(2).is_none());
        drop(busy_d);
        assert!(open.admit(2).is_some());
        let r = String::from_utf8(refusal(2)).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503")
                && head.contains(&format!("content-length: {}", body.len()))
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("all 2 connections"));
    }
}
