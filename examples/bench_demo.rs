//! A bounded load test of the demo's API: starts the demo server in-process on a free
//! 127.0.0.1 port (nothing else is ever contacted), sends `--requests` mixed requests
//! (classify / tag / translate, greedy and beam), `--concurrency` at a time, checks every
//! answer is the one the same request got alone, prints throughput and latency as JSON, and
//! stops.
//!
//! ```text
//! cargo run --release --example bench_demo [-- --requests 500 --concurrency 16 --models models/]
//! ```
//!
//! Exits non-zero if any request failed or answered differently from the sequential run.

use anyhow::{bail, Context, Result};
use clap::Parser;
use neka::demo::{self, ModelDirs, Models};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

neka::use_mimalloc!();

#[derive(Parser)]
#[command(about = "Bounded load test of the demo's JSON API on 127.0.0.1")]
struct Args {
    /// Requests to send in all.
    #[arg(long, default_value_t = 500, value_parser = neka::cli::at_least_one)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16, value_parser = neka::cli::at_least_one)]
    concurrency: usize,
    /// Folder with the three models (as for the demo).
    #[arg(long, default_value = "models")]
    models: PathBuf,
}

/// The mix: one endpoint and JSON body per request kind, cycled through.
fn request_mix() -> Vec<(&'static str, String)> {
    let digit = |strokes: &[(usize, usize, usize, usize)]| {
        let mut px = vec![0u8; 784];
        for &(r0, r1, c0, c1) in strokes {
            for r in r0..r1 {
                for c in c0..c1 {
                    px[r * 28 + c] = 255;
                }
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

fn post(agent: &ureq::Agent, base: &str, endpoint: &str, body: &str) -> Result<String> {
    let url = format!("{base}/api/{endpoint}");
    match agent
        .post(&url)
        .set("Content-Type", "application/json")
        .send_string(body)
    {
        Ok(r) => Ok(r.into_string()?),
        Err(ureq::Error::Status(code, r)) => bail!("{url}: {code} {}", r.into_string()?),
        Err(e) => bail!("{url}: {e}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() -> Result<()> {
    neka::cli::init();
    let a = Args::parse();
    let models = Arc::new(Models::load(
        ModelDirs::under(&a.models),
        &candle_core::Device::Cpu,
    ));
    for line in models.report() {
        eprintln!("{line}");
    }
    // The server, on its own runtime thread; the process ending stops it.
    let (tx, rx) = std::sync::mpsc::channel();
    let router = demo::router(models);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .expect("a free port");
            tx.send(listener.local_addr().expect("an address")).unwrap();
            demo::serve(listener, router)
                .await
                .expect("the server runs");
        })
    });
    let base = format!("http://{}", rx.recv().context("the server did not start")?);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    let mix = request_mix();
    // Each request alone first: the answers every concurrent one must reproduce.
    let expected: Vec<String> = mix
        .iter()
        .map(|(e, b)| post(&agent, &base, e, b))
        .collect::<Result<_>>()?;
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let results: Vec<(usize, Duration, Result<bool, String>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..a.concurrency)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= a.requests {
                            return done;
                        }
                        let k = i % mix.len();
                        let t = Instant::now();
                        let r = post(&agent, &base, mix[k].0, &mix[k].1);
                        let same = r.map(|body| body == expected[k]).map_err(|e| e.to_string());
                        done.push((k, t.elapsed(), same));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let errors: Vec<&String> = results.iter().filter_map(|r| r.2.as_ref().err()).collect();
    let different = results.iter().filter(|r| r.2 == Ok(false)).count();
    let mut all: Vec<Duration> = results.iter().map(|r| r.1).collect();
    all.sort();
    let mut per_endpoint = serde_json::Map::new();
    for endpoint in ["classify", "tag", "translate"] {
        let mut d: Vec<Duration> = results
            .iter()
            .filter(|r| mix[r.0].0 == endpoint)
            .map(|r| r.1)
            .collect();
        d.sort();
        if !d.is_empty() {
            per_endpoint.insert(
                endpoint.into(),
                json!({"requests": d.len(),
                "p50_ms": percentile(&d, 50.0), "p99_ms": percentile(&d, 99.0)}),
            );
        }
    }
    if let Some(e) = errors.first() {
        eprintln!("first error: {e}");
    }
    neka::cli::print_json(&json!({
        "benchmark": "demo_api", "requests": results.len(), "concurrency": a.concurrency,
        "errors": errors.len(), "different_from_sequential": different, "wall_s": wall,
        "throughput_rps": results.len() as f64 / wall, "p50_ms": percentile(&all, 50.0),
        "p99_ms": percentile(&all, 99.0), "max_ms": percentile(&all, 100.0),
        "endpoints": per_endpoint, "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
    }));
    if !errors.is_empty() || different > 0 {
        bail!(
            "{} errors, {different} answers differ from the sequential ones",
            errors.len()
        );
    }
    Ok(())
}
