//! What `bench_demo` (the bounded load test) needs besides an HTTP client: the demo served on a
//! free 127.0.0.1 port in the background, the request mix, and the report; and the hostile
//! clients of [`hostile`] (dropping, stalling, flooding), with their own raw HTTP/1.1 client.

use super::{router, runtime, serve, Models};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Serves the demo over `models` on a free 127.0.0.1 port, on a runtime of its own in a
/// background thread (it stops when the process ends); returns the address.
pub fn serve_in_background(models: Arc<Models>) -> std::io::Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = match runtime() {
            Ok(rt) => rt,
            Err(e) => return tx.send(Err(e)).unwrap_or(()),
        };
        rt.block_on(async {
            let listener = match tokio::net::TcpListener::bind(("127.0.0.1", 0)).await {
                Ok(l) => l,
                Err(e) => return tx.send(Err(e)).unwrap_or(()),
            };
            let _ = tx.send(listener.local_addr());
            let _ = serve(listener, router(models)).await;
        })
    });
    rx.recv()
        .map_err(|_| std::io::Error::other("the demo server thread ended before listening"))?
}

/// The load test's mix, cycled through: `(endpoint, JSON body)` for two digits drawn as bars
/// (a 1 and a 7), two sentences to tag, and two German sentences (greedy and beam 5).
pub fn request_mix() -> Vec<(&'static str, String)> {
    let digit = |strokes: &[(usize, usize, usize, usize)]| {
        let mut px = vec![0u8; 784];
        for &(r0, r1, c0, c1) in strokes {
            for r in r0..r1 {
                px[r * 28 + c0..r * 28 + c1].fill(255);
            }
        }
        json!({ "pixels": px, "centre": true }).to_string()
    };
    let tag = |s: &str| json!({ "sentence": s }).to_string();
    let tr = |s: &str, beam: usize| json!({ "text": s, "beam": beam }).to_string();
    vec![
        ("classify", digit(&[(4, 24, 13, 16)])),
        ("tag", tag("The quick brown fox jumps over the lazy dog.")),
        (
            "translate",
            tr("Eine Gruppe von Menschen steht vor einem Iglu.", 1),
        ),
        ("classify", digit(&[(4, 7, 8, 20), (7, 24, 16, 19)])),
        (
            "tag",
            tag("I didn't see the train leave the station at 5 pm."),
        ),
        ("translate", tr("Ein Mann fährt Fahrrad.", 5)),
    ]
}

/// One request of the load test: which entry of the mix, how long it took, and whether its
/// answer equalled the sequential one (`Err`: the request failed, and why).
pub struct Outcome {
    pub kind: usize,
    pub latency: Duration,
    pub same: Result<bool, String>,
}

/// The `p`-th percentile (nearest rank) of sorted latencies, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// The load test's JSON line: requests, errors, answers that differed from the sequential
/// ones, throughput and p50 / p99 / max latency, overall and per endpoint.
pub fn report(
    mix: &[(&str, String)],
    results: &[Outcome],
    wall_s: f64,
    concurrency: usize,
) -> Value {
    let sorted = |keep: &dyn Fn(&Outcome) -> bool| {
        let mut d: Vec<Duration> = results
            .iter()
            .filter(|r| keep(r))
            .map(|r| r.latency)
            .collect();
        d.sort();
        d
    };
    let all = sorted(&|_| true);
    let mut endpoints = serde_json::Map::new();
    for endpoint in ["classify", "tag", "translate"] {
        let d = sorted(&|r| mix[r.kind].0 == endpoint);
        endpoints.insert(
            endpoint.into(),
            json!({"requests": d.len(), "p50_ms": percentile_ms(&d, 50.0), "p99_ms": percentile_ms(&d, 99.0)}),
        );
    }
    json!({
        "benchmark": "demo_api",
        "requests": results.len(),
        "concurrency": concurrency,
        "errors": results.iter().filter(|r| r.same.is_err()).count(),
        "different_from_sequential": results.iter().filter(|r| r.same == Ok(false)).count(),
        "wall_s": wall_s,
        "throughput_rps": results.len() as f64 / wall_s,
        "p50_ms": percentile_ms(&all, 50.0),
        "p99_ms": percentile_ms(&all, 99.0),
        "max_ms": percentile_ms(&all, 100.0),
        "endpoints": endpoints,
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

/// The hostile clients of [`hostile`] and the bounds the server must keep meanwhile.
#[derive(Debug, Clone)]
pub struct Hostile {
    /// Translation requests (beam 10, a 60-token sentence) whose sockets close ~15 ms after
    /// the request is sent.
    pub drops: usize,
    /// Connections opened and left silent.
    pub idle: usize,
    /// Connections that send half a request header, then stall.
    pub half_sent: usize,
    /// `/api/health` and a classify request must answer within this, while the idle and
    /// half-sent connections are open and right after the drops.
    pub max_latency: Duration,
    /// Threads the server's process may add over its count before the test.
    pub max_extra_threads: usize,
    /// Resident memory (MiB) the server's process may add over its size before the test.
    pub max_extra_rss_mib: f64,
    /// How long the translator may take to finish the dropped requests' work.
    pub max_settle: Duration,
}

impl Default for Hostile {
    fn default() -> Self {
        Self {
            drops: 200,
            idle: 200,
            half_sent: 100,
            max_latency: Duration::from_secs(5),
            max_extra_threads: 40,
            max_extra_rss_mib: 512.0,
            max_settle: Duration::from_secs(30),
        }
    }
}

impl Hostile {
    /// The default bounds, with these many clients of each kind.
    pub fn clients(drops: usize, idle: usize, half_sent: usize) -> Self {
        Self {
            drops,
            idle,
            half_sent,
            ..Self::default()
        }
    }
}

/// `(threads, resident MiB)` of process `pid` from `/proc/<pid>/status` (`None` off Linux).
pub fn threads_and_rss(pid: u32) -> Option<(usize, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some((field("Threads:")? as usize, field("VmRSS:")? / 1024.0))
}

/// One request on a fresh connection (`Connection: close`): the status, the body and the time
/// to the whole answer; `Err` if it could not be sent or read within `timeout`.
pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<(u16, String, Duration), String> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body.as_bytes()))
        .map_err(|e| format!("{path}: send: {e}"))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .map_err(|e| format!("{path}: no answer within {timeout:?}: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{path}: not an HTTP answer: {:.80}", text))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body, t.elapsed()))
}

/// A German sentence of 58 tokens: near the translator's [`super::translate::MAX_TOKENS`],
/// the longest beam search the demo runs.
pub fn long_sentence() -> String {
    let words = "ein mann mit einem roten hut fährt mit dem fahrrad durch die stadt ,";
    let mut s = String::new();
    while s.split_whitespace().count() + words.split_whitespace().count() < 58 {
        s.push_str(words);
        s.push(' ');
    }
    s.push('.');
    s
}

/// Samples the threads and RSS of `pid` every 20 ms until stopped: the peaks.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<Mutex<(usize, f64)>>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(Mutex::new((0usize, 0.0f64)));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Some((t, r)) = threads_and_rss(pid) {
                    let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
                    *p = (p.0.max(t), p.1.max(r));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self { stop, peak, thread }
    }

    fn stop(self) -> (usize, f64) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        let p = *self.peak.lock().unwrap_or_else(|e| e.into_inner());
        p
    }
}

/// The hostile load test against the demo at `addr` (127.0.0.1 only), whose process is `pid`:
///
/// 1. `drops` translation requests (beam 10, [`long_sentence`]) from 8 threads, each socket
///    closed ~15 ms after its request was sent;
/// 2. right after, `/api/health` and a classify request must answer within `max_latency`;
/// 3. `idle` silent connections and `half_sent` half-headers are opened and held; while they
///    are open, health and classify again within `max_latency`; then they are closed, and how
///    many the server had already closed is counted;
/// 4. the translator must be idle again within `max_settle` (health's `jobs.translator`).
///
/// Throughout, the process's threads and RSS are sampled; their peaks must stay within
/// `max_extra_threads` / `max_extra_rss_mib` of the figures before. Returns the JSON report;
/// its `violations` lists every bound broken (empty: passed).
pub fn hostile(addr: SocketAddr, pid: u32, h: &Hostile) -> Value {
    let mut violations: Vec<String> = Vec::new();
    let before = threads_and_rss(pid).unwrap_or((0, 0.0));
    let sampler = Sampler::start(pid);
    let start = Instant::now();
    let mut latency = serde_json::Map::new();
    let classify_body = request_mix()[0].1.clone();
    let mut probe = |phase: &str, violations: &mut Vec<String>| {
        for (name, method, path, body) in [
            ("health", "GET", "/api/health", ""),
            ("classify", "POST", "/api/classify", classify_body.as_str()),
        ] {
            let key = format!("{name}_{phase}_ms");
            match raw_request(addr, method, path, body, h.max_latency) {
                Ok((200, _, t)) => {
                    latency.insert(key.clone(), json!(t.as_secs_f64() * 1e3));
                    if t > h.max_latency {
                        violations.push(format!("{key}: {t:?} > {:?}", h.max_latency));
                    }
                }
                Ok((code, body, _)) => violations.push(format!("{key}: {code} {body}")),
                Err(e) => violations.push(format!("{key}: {e}")),
            }
        }
    };
    probe("before", &mut violations);

    // 1. requests whose clients go away
    let request = {
        let body = json!({"text": long_sentence(), "beam": 10}).to_string();
        format!(
            "POST /api/translate HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let sent = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (request, sent) = (&request, &sent);
            s.spawn(move || {
                for _ in (t..h.drops).step_by(8) {
                    if let Ok(mut c) = TcpStream::connect(addr) {
                        if c.write_all(request.as_bytes()).is_ok() {
                            sent.fetch_add(1, Ordering::SeqCst);
                        }
                        std::thread::sleep(Duration::from_millis(15));
                    }
                }
            });
        }
    });
    let drops_s = start.elapsed().as_secs_f64();
    probe("after_drops", &mut violations);

    // 3. silent and half-sent connections, held open
    let mut held = Vec::new();
    for i in 0..h.idle + h.half_sent {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(mut c) => {
                if i >= h.idle {
                    let _ = c.write_all(b"POST /api/translate HTTP/1.1\r\nHost: x\r\nContent-Le");
                }
                held.push(c);
            }
            Err(e) => {
                violations.push(format!("connection {i} of the held ones: {e}"));
                break;
            }
        }
    }
    probe("while_held", &mut violations);
    let closed_by_server = held
        .iter()
        .filter(|c| {
            // EOF, an answer (a 503 refusal) or a reset: closed; nothing to read yet: open
            let _ = c.set_nonblocking(true);
            let mut c: &TcpStream = c;
            let r = c.read(&mut [0u8; 512]);
            !matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    if held.len() - closed_by_server > super::server::MAX_CONNECTIONS {
        violations.push(format!(
            "{} held connections open at once, more than the demo's {} (it should close idle ones)",
            held.len() - closed_by_server,
            super::server::MAX_CONNECTIONS
        ));
    }
    let opened = held.len();
    drop(held);

    // 4. the dropped work must end
    let settle = Instant::now();
    let mut jobs = Value::Null;
    loop {
        match raw_request(addr, "GET", "/api/health", "", h.max_latency) {
            Ok((200, body, _)) => {
                jobs = serde_json::from_str::<Value>(&body)
                    .map_or(Value::Null, |v| v["jobs"]["translator"].clone());
                if jobs.is_null() || jobs["running"] == 0 {
                    break; // idle (or a demo without job counts: nothing to wait for)
                }
            }
            other => {
                violations.push(format!("health while settling: {other:?}"));
                break;
            }
        }
        if settle.elapsed() > h.max_settle {
            violations.push(format!(
                "the translator still busy after {:?}",
                h.max_settle
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let settle_s = settle.elapsed().as_secs_f64();
    let (peak_threads, peak_rss) = sampler.stop();
    let after = threads_and_rss(pid).unwrap_or((0, 0.0));
    if peak_threads > before.0 + h.max_extra_threads {
        violations.push(format!(
            "threads: {peak_threads} at the peak, more than {} + {}",
            before.0, h.max_extra_threads
        ));
    }
    if peak_rss > before.1 + h.max_extra_rss_mib {
        violations.push(format!(
            "RSS: {peak_rss:.0} MiB at the peak, more than {:.0} + {:.0} MiB",
            before.1, h.max_extra_rss_mib
        ));
    }
    json!({
        "benchmark": "demo_hostile",
        "drops": {"requests": h.drops, "sent": sent.load(Ordering::SeqCst), "send_s": drops_s},
        "held": {"idle": h.idle, "half_sent": h.half_sent, "opened": opened,
                 "closed_by_server": closed_by_server},
        "latency_ms": latency,
        "threads": {"before": before.0, "peak": peak_threads, "after": after.0},
        "rss_mib": {"before": before.1, "peak": peak_rss, "after": after.1},
        "translator_jobs": jobs,
        "settle_s": settle_s,
        "wall_s": start.elapsed().as_secs_f64(),
        "violations": violations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_report() {
        let ms = |v: u64| Duration::from_millis(v);
        let d: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile_ms(&d, 50.0), 51.0); // nearest rank of 0.5 · 99 = 49.5 → index 50
        assert_eq!(percentile_ms(&d, 99.0), 99.0);
        assert_eq!(percentile_ms(&d, 100.0), 100.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
        let mix = request_mix();
        let results = vec![
            Outcome {
                kind: 0,
                latency: ms(10),
                same: Ok(true),
            },
            Outcome {
                kind: 1,
                latency: ms(20),
                same: Ok(false),
            },
            Outcome {
                kind: 2,
                latency: ms(30),
                same: Err("503".into()),
            },
        ];
        let r = report(&mix, &results, 0.5, 2);
        assert_eq!(
            (r["requests"].as_u64(), r["errors"].as_u64()),
            (Some(3), Some(1))
        );
        assert_eq!(r["different_from_sequential"], 1);
        assert_eq!(r["throughput_rps"], 6.0);
        assert_eq!(r["endpoints"]["tag"]["p50_ms"], 20.0);
    }
}
