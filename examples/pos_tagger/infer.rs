//! `pos_tagger eval | tag | gates`: use a saved tagger.

use anyhow::Result;
use clap::Args;
use neka::cli::ModelArgs;
use neka_common::data::text::tokenize_ewt;
use neka_lstm::tagger::{LoadedTagger, MAX_SENTENCE_LEN};
use std::path::PathBuf;

/// The pretrained tagger these commands use without `--model`.
const PRETRAINED: &str = "models/pos-bilstm-ewt";

pub fn load(m: &ModelArgs) -> Result<LoadedTagger> {
    let (dir, device) = m.open(PRETRAINED, &LoadedTagger::FILES)?;
    Ok(LoadedTagger::load(&dir, &device)?)
}

#[derive(Args)]
pub struct Tag {
    #[command(flatten)]
    model: ModelArgs,
    /// Sentences to tag; none = read one sentence per line from stdin.
    sentences: Vec<String>,
}

#[derive(Args)]
pub struct Gates {
    #[command(flatten)]
    model: ModelArgs,
    /// The sentence.
    sentence: String,
    /// Folder for lstm_gates.png and lstm_cell_state.png.
    #[arg(long, default_value = "runs/pos_tagger/gates")]
    out: PathBuf,
    /// Units drawn one by one (those whose forget gate varies most).
    #[arg(long, default_value_t = 2)]
    units: usize,
}

/// Tags every sentence up to the first one that cannot be tagged (a line that is not UTF-8 or
/// is too long, a sentence of too many words), prints their tags, then fails naming that
/// sentence's line (or argument).
pub fn tag(a: Tag) -> Result<()> {
    let loaded = load(&a.model)?;
    let input = neka::cli::read_sentences(&a.sentences);
    let tokens: Vec<Vec<String>> = input.sentences.iter().map(|l| tokenize_ewt(l)).collect();
    let long = input.first_too_long(|i| {
        (tokens[i].len() > MAX_SENTENCE_LEN).then(|| {
            format!(
                "{} words, more than the {MAX_SENTENCE_LEN} the tagger accepts: split it into \
                 sentences, one per line",
                tokens[i].len()
            )
        })
    });
    let stop = long.as_ref().map_or(tokens.len(), |(i, _)| *i);
    for (words, tags) in tokens[..stop].iter().zip(loaded.tag(&tokens[..stop])?) {
        let pairs: Vec<String> = words
            .iter()
            .zip(&tags)
            .map(|(w, t)| format!("{w}/{t}"))
            .collect();
        println!("{}", pairs.join(" "));
    }
    match long {
        Some((_, e)) => Err(e),
        None => input.finish(),
    }
}

pub fn gates(a: Gates) -> Result<()> {
    let units = load(&a.model)?.draw_gates(&tokenize_ewt(&a.sentence), a.units, &a.out)?;
    println!(
        "units {units:?}; wrote lstm_gates.png and lstm_cell_state.png in {}",
        a.out.display()
    );
    Ok(())
}
