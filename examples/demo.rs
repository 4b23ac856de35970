//! The zoo's three model families in the browser: draw a digit for the CNN, tag a sentence
//! and watch the LSTM's gates, translate German with attention.
//!
//! ```text
//! cargo run --example demo [-- --port 8080 --models models/ --host 127.0.0.1]
//! cargo run --example demo -- --model-id cnn=ORG/NAME   # a Hub model for one panel
//! ```
//!
//! then open the address it prints. The page and the JSON API (`POST /api/classify`,
//! `/api/tag`, `/api/translate`, `GET /api/health`) are [`neka::demo`]; this file only parses
//! the flags, loads the models and serves. A model that does not load is reported on its
//! panel and by `/api/health`; the others still serve. Ctrl-C (or SIGTERM) stops the server:
//! requests in flight get [`neka::demo::server::SHUTDOWN_DEADLINE`] to finish, then it exits
//! anyway (inference still running on the blocking pool is abandoned).

use anyhow::{Context, Result};
use clap::Parser;
use neka::demo::{self, ModelDirs, Models, Panel};
use neka_common::device::DeviceRequest;
use std::path::PathBuf;
use std::sync::Arc;

neka::use_mimalloc!();

#[derive(Parser)]
#[command(about = "The CNN, POS tagger and translator in the browser (a local web server)")]
struct Args {
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Folder with mnist-cnn/, pos-bilstm-ewt/ and seq2seq-multi30k-de-en/.
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// PANEL=ORG/NAME: take the cnn, tagger or translator model from a Hugging Face Hub repo.
    #[arg(long = "model-id", value_parser = panel_and_repo)]
    model_id: Vec<(Panel, String)>,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
}

fn panel_and_repo(s: &str) -> Result<(Panel, String), String> {
    let (panel, repo) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: write PANEL=ORG/NAME, e.g. cnn=neka-rs/mnist-cnn"))?;
    Ok((panel.parse()?, repo.to_string()))
}

fn main() -> std::process::ExitCode {
    neka::cli::main(run)
}

fn run() -> Result<()> {
    let a = Args::parse();
    let device = a.device.device()?;
    let mut dirs = ModelDirs::under(&a.models);
    for (panel, repo) in &a.model_id {
        dirs.from_hub(*panel, repo);
    }
    let models = Arc::new(Models::load(dirs, &device));
    for line in models.report() {
        eprintln!("{line}");
    }
    let runtime = demo::runtime()?;
    let served = runtime.block_on(async {
        let addr = (a.host.as_str(), a.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {}:{}", a.host, a.port))?;
        println!(
            "neka demo on http://{} (Ctrl-C stops it)",
            listener.local_addr()?
        );
        demo::serve(listener, demo::router(models)).await?;
        Ok::<_, anyhow::Error>(())
    });
    // a beam search still running on the blocking pool does not hold the exit
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    eprintln!("stopped");
    served
}
