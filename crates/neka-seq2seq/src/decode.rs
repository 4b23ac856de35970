//! Decoding: batched greedy search and beam search, both returning the attention weights.
//!
//! Greedy picks `argmax_y p(y | y_<t, x)` at every step for a whole batch of sentences.
//! Beam search keeps the `k` best partial translations of a sentence by total log-probability;
//! a hypothesis that emits `<eos>` is finished and scored `log p / len^α` (length
//! normalisation, `α = length_penalty`); the search stops when `k` hypotheses are finished or
//! at `max_len`. With `k = 1` it is greedy search.
//!
//! [`beam_search_batch`] runs the beams of many sentences as one `(Σ live beams)` batch per
//! step: a sentence's finished search retires its rows, and the others go on. It returns what
//! [`beam_search`] (one sentence at a time, kept as the readable reference) returns for every
//! sentence, and costs far less: each decoder step reads the weights once for all sentences
//! instead of once per sentence.

use crate::data::{SourceBatch, BOS_ID, EOS_ID};
use crate::kernels::Rows;
use crate::model::{Encoded, Seq2Seq};
use candle_core::{Result, Tensor};

/// One translation.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Target ids, without `<bos>`, up to and including `<eos>` if it was produced.
    pub ids: Vec<u32>,
    /// Total log-probability.
    pub log_prob: f64,
    /// Attention weights, one row over the source tokens per output token (empty without
    /// attention).
    pub attention: Vec<Vec<f32>>,
}

/// Decoding limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeConfig {
    /// The slope of the output length limit: at most `max_len_a · S + max_len_b` output tokens
    /// for a source of `S` tokens.
    pub max_len_a: f64,
    /// The constant term of the output length limit (default 10).
    pub max_len_b: usize,
    /// `k`, hypotheses kept per sentence (default 5); 1 is greedy search. At most [`MAX_BEAM`].
    pub beam: usize,
    /// `α` of the length normalisation `log p / len^α`.
    pub length_penalty: f64,
    /// Longest source sentence accepted, in tokens: memory grows with it (Multi30k's longest
    /// is under 50; training keeps pairs of at most 100).
    pub max_src_len: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            max_len_a: 2.0,
            max_len_b: 10,
            beam: 5,
            length_penalty: 1.0,
            max_src_len: 400,
        }
    }
}

/// The widest beam the search accepts. Time and memory grow with the beam (each step scores
/// `beam × vocabulary` extensions per sentence, and keeps `2 × beam` of them); gains in BLEU
/// stop well before 64 (Multi30k peaks around 5–10), and a beam of thousands ran for minutes
/// and gigabytes on a three-word sentence.
pub const MAX_BEAM: usize = 64;

impl DecodeConfig {
    /// Checks the search against the model's target vocabulary of `tgt_vocab` tokens: a beam
    /// of 1 (greedy) up to [`MAX_BEAM`] and the vocabulary size (a wider beam has nothing more
    /// to keep and costs memory in proportion), a finite length penalty ≥ 0 and length factor
    /// ≥ 0. Errors are [`neka_common::Error::Config`] naming the flag.
    pub fn validate(&self, tgt_vocab: usize) -> crate::Result<()> {
        let bad = |flag: &str, msg: String| -> crate::Result<()> {
            Err(neka_common::Error::config(flag, msg))
        };
        let widest = MAX_BEAM.min(tgt_vocab.max(1));
        if self.beam == 0 || self.beam > widest {
            return bad(
                "beam",
                format!(
                    "{}: must be between 1 (greedy) and {widest} (at most {MAX_BEAM}, and at \
                     most the target vocabulary size {tgt_vocab}); 5 is the usual beam",
                    self.beam
                ),
            );
        }
        if !(self.length_penalty.is_finite() && self.length_penalty >= 0.0) {
            return bad(
                "length_penalty",
                format!("{}: must be a finite number ≥ 0", self.length_penalty),
            );
        }
        if !(self.max_len_a.is_finite() && self.max_len_a >= 0.0) {
            return bad(
                "max_len_a",
                format!("{}: must be a finite number ≥ 0", self.max_len_a),
            );
        }
        if self.max_src_len == 0 {
            return bad("max_src_len", "0: must be at least 1 token".into());
        }
        Ok(())
    }

    fn max_len(&self, src_len: usize) -> usize {
        (self.max_len_a * src_len as f64) as usize + self.max_len_b
    }
}

/// Greedy search for a batch of sentences.
pub fn greedy(model: &Seq2Seq, src: &SourceBatch, cfg: &DecodeConfig) -> Result<Vec<Hypothesis>> {
    let dev = src.ids.device();
    let b = src.lengths.len();
    let (enc_all, mut state) = model.encode(src, false)?;
    let mut y = model.bos(b, dev)?;
    let mut hyps = vec![
        Hypothesis {
            ids: Vec::new(),
            log_prob: 0.0,
            attention: Vec::new(),
        };
        b
    ];
    // `rows[r]`: the sentence decoder row r belongs to. Finished sentences leave the batch
    // once an eighth of the rows are finished (each regrouping copies the encoder outputs).
    let mut rows: Vec<usize> = (0..b).collect();
    let mut enc = enc_all.clone();
    loop {
        let (logits, alpha, next) = model.decode_step(&y, &state, &enc, false)?;
        state = next;
        let lp = Rows::log_softmax(&logits)?;
        let best: Vec<u32> = (0..lp.len()).map(|r| lp.argmax(r)).collect();
        let att = alpha.as_ref().map(Rows::new).transpose()?;
        let mut live = Vec::with_capacity(rows.len());
        for (r, &i) in rows.iter().enumerate() {
            let h = &mut hyps[i];
            if h.ids.last() == Some(&EOS_ID) || h.ids.len() >= cfg.max_len(src.lengths[i]) {
                continue; // finished earlier, still in the batch
            }
            h.ids.push(best[r]);
            h.log_prob += lp.row(r)[best[r] as usize] as f64;
            if let Some(a) = &att {
                h.attention.push(a.row(r)[..src.lengths[i]].to_vec());
            }
            if best[r] != EOS_ID && h.ids.len() < cfg.max_len(src.lengths[i]) {
                live.push(r);
            }
        }
        if live.is_empty() {
            break;
        }
        let mut best = best;
        if 8 * (rows.len() - live.len()) >= rows.len() {
            let idx = Tensor::from_vec(
                live.iter().map(|&r| r as u32).collect::<Vec<_>>(),
                live.len(),
                dev,
            )?;
            state = state.select(&idx)?;
            best = live.iter().map(|&r| best[r]).collect();
            rows = live.iter().map(|&r| rows[r]).collect();
            let sent = Tensor::from_vec(
                rows.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                rows.len(),
                dev,
            )?;
            enc = enc_all.select(&sent)?;
        }
        y = Tensor::from_vec(best, rows.len(), dev)?;
    }
    Ok(hyps)
}

/// Beam search for one sentence `src` (ids, no padding).
pub fn beam_search(model: &Seq2Seq, src: &[u32], cfg: &DecodeConfig) -> Result<Hypothesis> {
    check_beam(cfg)?;
    let dev = model.device();
    let k = cfg.beam.max(1);
    let s = src.len();
    let batch =
        SourceBatch::new(&[src], &dev).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let (enc1, mut state) = model.encode(&batch, false)?;
    let mut beams = vec![Hypothesis {
        ids: Vec::new(),
        log_prob: 0.0,
        attention: Vec::new(),
    }];
    let mut finished: Vec<Hypothesis> = Vec::new();
    let norm = |h: &Hypothesis| h.log_prob / (h.ids.len().max(1) as f64).powf(cfg.length_penalty);
    for _ in 0..cfg.max_len(s) {
        let n = beams.len();
        // The sentence's encoding, once per live hypothesis.
        let rows = Tensor::zeros(n, candle_core::DType::U32, &dev)?;
        let enc = enc1.select(&rows)?;
        let last: Vec<u32> = beams
            .iter()
            .map(|h| h.ids.last().copied().unwrap_or(BOS_ID))
            .collect();
        let y = Tensor::from_vec(last, n, &dev)?;
        let (logits, alpha, next) = model.decode_step(&y, &state, &enc, false)?;
        let lp = Rows::log_softmax(&logits)?;
        let lp: Vec<&[f32]> = (0..lp.len()).map(|r| lp.row(r)).collect();
        let att: Option<Vec<Vec<f32>>> = alpha.map(|a| a.to_vec2()).transpose()?;
        // The 2k best (hypothesis, token) extensions by total log-probability; ties broken by
        // hypothesis, then token id (so k = 1 picks what argmax picks).
        let order = |a: &(f64, usize, u32), b: &(f64, usize, u32)| {
            b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
        };
        let mut cand: Vec<(f64, usize, u32)> = lp
            .iter()
            .enumerate()
            .flat_map(|(i, row)| {
                let base = beams[i].log_prob;
                row.iter()
                    .enumerate()
                    .map(move |(v, &p)| (base + p as f64, i, v as u32))
            })
            .collect();
        let keep = (2 * k).min(cand.len());
        cand.select_nth_unstable_by(keep - 1, order);
        cand.truncate(keep);
        cand.sort_by(order);
        let mut next_beams = Vec::with_capacity(k);
        let mut parents = Vec::with_capacity(k);
        for (rank, (score, i, v)) in cand.into_iter().enumerate() {
            if v == EOS_ID && rank >= k {
                continue; // an <eos> outside the top k does not end a hypothesis
            }
            let mut h = beams[i].clone();
            h.ids.push(v);
            h.log_prob = score;
            if let Some(a) = &att {
                h.attention.push(a[i][..s].to_vec());
            }
            if v == EOS_ID {
                finished.push(h);
            } else {
                next_beams.push(h);
                parents.push(i as u32);
                if next_beams.len() == k {
                    break;
                }
            }
        }
        beams = next_beams;
        if finished.len() >= k || beams.is_empty() {
            break;
        }
        state = next.select(&Tensor::from_vec(parents, beams.len(), &dev)?)?;
    }
    finished.extend(beams);
    let best = finished
        .into_iter()
        .map(|h| (norm(&h), h))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, h)| h)
        .expect("at least one hypothesis");
    Ok(best)
}

/// The search functions' own guard (they return candle errors): a beam wider than
/// [`MAX_BEAM`] is refused before anything is allocated. [`DecodeConfig::validate`] gives the
/// typed error the [`crate::Translator`] returns.
fn check_beam(cfg: &DecodeConfig) -> Result<()> {
    if cfg.beam > MAX_BEAM {
        candle_core::bail!(
            "beam {} is wider than the {MAX_BEAM} the search accepts (DecodeConfig::beam)",
            cfg.beam
        )
    }
    Ok(())
}

/// `(score, row, token)` in search order: higher total log-probability first, ties broken by
/// row (hypothesis), then token id (so `k = 1` picks what argmax picks).
fn search_order(a: &(f64, usize, u32), b: &(f64, usize, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
}

/// The `keep` best `(base + lp[v], row, v)` of one row in [`search_order`].
fn row_best(base: f64, lp: &[f32], row: usize, keep: usize, out: &mut Vec<(f64, usize, u32)>) {
    let start = out.len();
    for (v, &p) in lp.iter().enumerate() {
        let c = (base + p as f64, row, v as u32);
        let n = out.len() - start;
        if n == keep {
            // Full: enter only if better than the worst kept (ties go to the lower id, kept).
            if search_order(&c, &out[out.len() - 1]) != std::cmp::Ordering::Less {
                continue;
            }
            out.pop();
        }
        let at = start + out[start..].partition_point(|x| search_order(x, &c).is_lt());
        out.insert(at, c);
    }
}

/// Beam search for many sentences at once (ids, no padding; any lengths): the same
/// hypotheses as [`beam_search`] on each sentence, in input order.
///
/// Rows of the decoder batch are the live hypotheses of the unfinished sentences, sentence
/// by sentence; each step extends all of them, and per sentence the same rules as
/// [`beam_search`] pick the next beam (the `2k` best extensions over its rows; `<eos>` within
/// the top `k` finishes a hypothesis). A sentence is done when `k` hypotheses have finished,
/// no beam is left or it reached its length limit; its rows then leave the batch.
pub fn beam_search_batch(
    model: &Seq2Seq,
    srcs: &[&[u32]],
    cfg: &DecodeConfig,
) -> Result<Vec<Hypothesis>> {
    check_beam(cfg)?;
    if srcs.is_empty() {
        return Ok(Vec::new());
    }
    let dev = model.device();
    let k = cfg.beam.max(1);
    let batch = SourceBatch::new(srcs, &dev).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let (enc_all, mut state) = model.encode(&batch, false)?;
    let empty = Hypothesis {
        ids: Vec::new(),
        log_prob: 0.0,
        attention: Vec::new(),
    };
    let mut beams: Vec<Vec<Hypothesis>> = vec![vec![empty]; srcs.len()];
    let mut finished: Vec<Vec<Hypothesis>> = vec![Vec::new(); srcs.len()];
    // The sentence of every row, in row order (each live sentence's rows are contiguous).
    let mut row_sent: Vec<u32> = (0..srcs.len() as u32).collect();
    let mut enc: Option<(Vec<u32>, Encoded)> = None;
    for step in 0.. {
        // The encoding once per row; gathered again only when the rows' sentences change.
        if enc.as_ref().is_none_or(|(r, _)| *r != row_sent) {
            let rows = Tensor::from_vec(row_sent.clone(), row_sent.len(), &dev)?;
            let e = enc_all.select(&rows)?;
            enc = Some((row_sent.clone(), e));
        }
        let enc = &enc.as_ref().expect("gathered above").1;
        let last: Vec<u32> = row_sent
            .iter()
            .zip(live_rows(&row_sent))
            .map(|(&s, i)| beams[s as usize][i].ids.last().copied().unwrap_or(BOS_ID))
            .collect();
        let y = Tensor::from_vec(last, row_sent.len(), &dev)?;
        let (logits, alpha, next) = model.decode_step(&y, &state, enc, false)?;
        let lp = Rows::log_softmax(&logits)?;
        let att = alpha.as_ref().map(Rows::new).transpose()?;
        let (mut next_sent, mut parents) = (Vec::new(), Vec::new());
        // Per sentence (its first row), the 2k best extensions, sentences split over the pool.
        let mut groups = Vec::new();
        let mut r0 = 0;
        while r0 < row_sent.len() {
            groups.push(r0);
            r0 += beams[row_sent[r0] as usize].len();
        }
        let per = groups
            .len()
            .div_ceil(neka_common::kernels::threads())
            .max(1);
        let bests: Vec<Vec<(f64, usize, u32)>> =
            neka_common::kernels::parallel(groups.chunks(per), |gs| {
                gs.iter()
                    .map(|&r0| {
                        let hs = &beams[row_sent[r0] as usize];
                        let mut best = Vec::with_capacity(2 * k * hs.len());
                        for (i, h) in hs.iter().enumerate() {
                            row_best(h.log_prob, lp.row(r0 + i), i, 2 * k, &mut best);
                        }
                        best.sort_by(search_order);
                        best.truncate(2 * k);
                        best
                    })
                    .collect::<Vec<_>>()
            })
            .concat();
        for (&r0, best) in groups.iter().zip(bests) {
            let s = row_sent[r0] as usize;
            let len = srcs[s].len();
            let mut next_beams = Vec::with_capacity(k);
            for (rank, (score, i, v)) in best.into_iter().enumerate() {
                if v == EOS_ID && rank >= k {
                    continue; // an <eos> outside the top k does not end a hypothesis
                }
                let mut h = beams[s][i].clone();
                h.ids.push(v);
                h.log_prob = score;
                if let Some(a) = &att {
                    h.attention.push(a.row(r0 + i)[..len].to_vec());
                }
                if v == EOS_ID {
                    finished[s].push(h);
                } else {
                    next_beams.push(h);
                    parents.push((r0 + i) as u32);
                    next_sent.push(s as u32);
                    if next_beams.len() == k {
                        break;
                    }
                }
            }
            let done =
                finished[s].len() >= k || next_beams.is_empty() || step + 1 >= cfg.max_len(len);
            if done {
                // Retire the sentence's rows.
                let keep = parents.len() - next_beams.len();
                parents.truncate(keep);
                next_sent.truncate(keep);
                finished[s].append(&mut next_beams);
            }
            beams[s] = next_beams;
        }
        if parents.is_empty() {
            break;
        }
        state = next.select(&Tensor::from_vec(parents.clone(), parents.len(), &dev)?)?;
        row_sent = next_sent;
    }
    let norm = |h: &Hypothesis| h.log_prob / (h.ids.len().max(1) as f64).powf(cfg.length_penalty);
    Ok(finished
        .into_iter()
        .map(|f| {
            f.into_iter()
                .map(|h| (norm(&h), h))
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, h)| h)
                .expect("at least one hypothesis")
        })
        .collect())
}

/// For each row, its index among its sentence's rows (rows of a sentence are contiguous).
fn live_rows(row_sent: &[u32]) -> impl Iterator<Item = usize> + '_ {
    row_sent.iter().enumerate().map(move |(r, &s)| {
        let mut i = 0;
        while i < r && row_sent[r - i - 1] == s {
            i += 1;
        }
        i
    })
}

#[cfg(test)]
mod validate_tests {
    use super::{DecodeConfig, MAX_BEAM};

    #[test]
    fn beams_and_penalties_out_of_range_are_named_errors() {
        let err = |c: DecodeConfig| c.validate(100).unwrap_err().to_string();
        let d = DecodeConfig::default;
        assert!(err(DecodeConfig { beam: 0, ..d() }).contains("invalid beam"));
        let e = err(DecodeConfig {
            beam: 100_000,
            ..d()
        });
        assert!(
            e.contains("invalid beam") && e.contains("vocabulary size 100"),
            "{e}"
        );
        assert!(err(DecodeConfig {
            length_penalty: f64::NAN,
            ..d()
        })
        .contains("invalid length_penalty"));
        assert!(err(DecodeConfig {
            length_penalty: -1.0,
            ..d()
        })
        .contains("invalid length_penalty"));
        d().validate(100).unwrap();
        DecodeConfig {
            beam: MAX_BEAM,
            ..d()
        }
        .validate(100)
        .unwrap();
        // the cap holds whatever the vocabulary: a beam of thousands is refused
        let e = DecodeConfig { beam: 5976, ..d() }
            .validate(10_000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("invalid beam") && e.contains("at most 64"),
            "{e}"
        );
        let e = err(DecodeConfig {
            beam: MAX_BEAM + 1,
            ..d()
        });
        assert!(e.contains("between 1 (greedy) and 64"), "{e}");
    }
}
