//! `pos_tagger eval`: UPOS accuracy, per-tag scores and the confusion matrix on a CoNLL-U file
//! or an EWT split.

use crate::infer::load;
use anyhow::{bail, Result};
use clap::Args;
use neka::cli::ModelArgs;
use neka_common::data::conllu;
use neka_lstm::tagger::MAX_SENTENCE_LEN;
use std::path::PathBuf;

#[derive(Args)]
pub struct Eval {
    #[command(flatten)]
    model: ModelArgs,
    /// CoNLL-U file with gold UPOS tags.
    #[arg(long, conflicts_with = "split", required_unless_present = "split")]
    conllu: Option<PathBuf>,
    /// A split of UD English EWT instead of a file (train, dev, test), found as training finds
    /// it: --data-dir, then $NEKA_DATA_DIR, then the Hugging Face Hub.
    #[arg(long)]
    split: Option<String>,
    /// Data root holding ud-english-ewt/ for --split (default: $NEKA_DATA_DIR, else the Hub).
    #[arg(long, requires = "split")]
    data_dir: Option<PathBuf>,
    /// Confusion-matrix PNG (default: <conllu stem>.confusion.png in the current directory).
    #[arg(long)]
    confusion_png: Option<PathBuf>,
}

pub fn eval(a: Eval) -> Result<()> {
    let loaded = load(&a.model)?;
    // (line of the sentence in its file, sentence); a Hub or data-folder split has no lines
    let (with_lines, file) = match (&a.conllu, &a.split) {
        (Some(path), _) => (conllu::read_conllu_with_lines(path)?, path.clone()),
        (None, Some(split)) => {
            let (sentences, source) = conllu::load_ewt_split(a.data_dir.as_deref(), split)?;
            println!(
                "UD English EWT {split}: {} sentences from {source}",
                sentences.len()
            );
            (
                sentences.into_iter().map(|s| (0, s)).collect(),
                PathBuf::from(format!("en_ewt-ud-{split}.conllu")),
            )
        }
        (None, None) => bail!("give --conllu FILE or --split SPLIT"),
    };
    if with_lines.is_empty() {
        bail!("{}: no sentences", file.display());
    }
    if let Some((i, (line, s))) = with_lines
        .iter()
        .enumerate()
        .find(|(_, (_, s))| s.len() > MAX_SENTENCE_LEN)
    {
        let at = match line {
            0 => format!("{}: sentence {}", file.display(), i + 1),
            l => format!("{}:{l}", file.display()),
        };
        bail!(
            "{at}: the sentence starting here has {} words, more than the {MAX_SENTENCE_LEN} \
             the tagger accepts: split it into sentences (a blank line ends one, and the next \
             starts again at word ID 1)",
            s.len()
        );
    }
    let sentences: Vec<_> = with_lines.into_iter().map(|(_, s)| s).collect();
    let cm = loaded.evaluate(&sentences)?;
    print!("{}", cm.report());
    let png = a.confusion_png.clone().unwrap_or_else(|| {
        let stem = file.file_stem().unwrap_or_default().to_string_lossy();
        PathBuf::from(format!("{stem}.confusion.png"))
    });
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let title = format!(
        "UPOS confusion on {name} (accuracy {:.2}%)",
        100.0 * cm.accuracy()
    );
    cm.plot(&png, &title)?;
    println!("confusion matrix: {}", png.display());
    neka::cli::print_json(
        &serde_json::json!({"file": file, "split": a.split, "sentences": sentences.len(), "tokens": cm.total(),
            "upos_accuracy": cm.accuracy()}),
    );
    Ok(())
}
