//! What `bench_demo` (the bounded load test) needs besides an HTTP client: the demo served on a
//! free 127.0.0.1 port in the background, the request mix, and the report.

use super::{router, serve, Models};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Serves the demo over `models` on a free 127.0.0.1 port, on a runtime of its own in a
/// background thread (it stops when the process ends); returns the address.
pub fn serve_in_background(models: Arc<Models>) -> std::io::Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Runtime::new() {
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
