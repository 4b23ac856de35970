//! A bounded load test of the demo's API: starts the demo server in-process on a free
//! 127.0.0.1 port (nothing else is ever contacted), sends `--requests` mixed requests
//! (classify / tag / translate, greedy and beam), `--concurrency` at a time, checks every
//! answer is the one the same request got alone, prints throughput and latency as JSON, and
//! stops. The mix and the report are [`neka::demo::load`].
//!
//! ```text
//! cargo run --release --example bench_demo [-- --requests 500 --concurrency 16 --models models/]
//! ```
//!
//! Exits non-zero if any request failed or answered differently from the sequential run.
//! `--hostile` runs [`neka::demo::load::hostile`] instead: clients that drop, stall and flood,
//! with bounds on latency, threads and RSS (non-zero exit when one is broken); `--addr`/`--pid`
//! point it at a demo already running on 127.0.0.1 (e.g. an older build, for comparison).

use anyhow::{bail, Context, Result};
use clap::Parser;
use neka::demo::load::{self, Hostile, Outcome};
use neka::demo::{ModelDirs, Models};
use std::net::SocketAddr;
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
    /// Hostile clients instead of the mix: --drops, --idle and --half-sent connections.
    #[arg(long)]
    hostile: bool,
    #[arg(long, default_value_t = 200)]
    drops: usize,
    #[arg(long, default_value_t = 200)]
    idle: usize,
    #[arg(long, default_value_t = 100)]
    half_sent: usize,
    /// With --hostile: a demo already running at this 127.0.0.1 address, process --pid.
    #[arg(long, requires = "pid")]
    addr: Option<SocketAddr>,
    #[arg(long)]
    pid: Option<u32>,
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

fn main() -> Result<()> {
    neka::cli::init();
    let a = Args::parse();
    let (addr, pid) = match (a.addr, a.pid) {
        (Some(addr), Some(pid)) if addr.ip().is_loopback() => (addr, pid),
        (Some(addr), _) => bail!("--addr {addr}: the load test only contacts 127.0.0.1"),
        _ => {
            let models = Models::load(ModelDirs::under(&a.models), &candle_core::Device::Cpu);
            for line in models.report() {
                eprintln!("{line}");
            }
            let addr = load::serve_in_background(Arc::new(models)).context("cannot start")?;
            (addr, std::process::id())
        }
    };
    if a.hostile {
        let h = Hostile::clients(a.drops, a.idle, a.half_sent);
        let report = load::hostile(addr, pid, &h);
        neka::cli::print_json(&report);
        match report["violations"].as_array() {
            Some(v) if !v.is_empty() => bail!("{} bounds broken: {v:?}", v.len()),
            _ => return Ok(()),
        }
    }
    let base = format!("http://{addr}");
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    let mix = load::request_mix();
    // Each request alone first: the answers every concurrent one must reproduce.
    let expected: Vec<String> = mix
        .iter()
        .map(|(e, b)| post(&agent, &base, e, b))
        .collect::<Result<_>>()?;
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let results: Vec<Outcome> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..a.concurrency)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= a.requests {
                            return done;
                        }
                        let kind = i % mix.len();
                        let t = Instant::now();
                        let r = post(&agent, &base, mix[kind].0, &mix[kind].1);
                        let same = r
                            .map(|body| body == expected[kind])
                            .map_err(|e| e.to_string());
                        done.push(Outcome {
                            kind,
                            latency: t.elapsed(),
                            same,
                        });
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let report = load::report(&mix, &results, start.elapsed().as_secs_f64(), a.concurrency);
    if let Some(e) = results.iter().find_map(|r| r.same.as_ref().err()) {
        eprintln!("first error: {e}");
    }
    neka::cli::print_json(&report);
    if report["errors"] != 0 || report["different_from_sequential"] != 0 {
        bail!(
            "{} errors, {} answers differ from the sequential ones",
            report["errors"],
            report["different_from_sequential"]
        );
    }
    Ok(())
}
