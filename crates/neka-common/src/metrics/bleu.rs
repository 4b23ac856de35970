//! Corpus BLEU, as sacreBLEU computes it.

use serde::{Deserialize, Serialize};

/// Corpus BLEU (Papineni et al. 2002) as sacreBLEU computes it with `--tokenize none`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bleu {
    /// 0–100.
    pub score: f64,
    /// Clipped n-gram matches, n = 1..4.
    pub matches: [usize; 4],
    /// Hypothesis n-grams, n = 1..4.
    pub totals: [usize; 4],
    /// Brevity penalty `min(1, exp(1 − r/c))`.
    pub brevity_penalty: f64,
    /// `c`, tokens in all hypotheses.
    pub hyp_len: usize,
    /// `r`, tokens in all references.
    pub ref_len: usize,
}

/// Corpus BLEU-4 of tokenized hypotheses against one reference each:
/// `BLEU = BP · exp(¼ Σ_n log p_n)`, `p_n` = clipped n-gram matches / hypothesis n-grams summed
/// over the corpus, `BP = exp(1 − r/c)` when the hypotheses are shorter (`c < r`). A `p_n` with
/// no match is smoothed as sacreBLEU's default `exp` method does (`1 / (2^k · total_n)` for the
/// k-th such n), so the score agrees with `sacrebleu --tokenize none`.
pub fn corpus_bleu<S: AsRef<str>>(hyps: &[Vec<S>], refs: &[Vec<S>]) -> Bleu {
    use std::collections::HashMap;
    let mut matches = [0usize; 4];
    let mut totals = [0usize; 4];
    let (mut hyp_len, mut ref_len) = (0, 0);
    for (h, r) in hyps.iter().zip(refs) {
        let h: Vec<&str> = h.iter().map(AsRef::as_ref).collect();
        let r: Vec<&str> = r.iter().map(AsRef::as_ref).collect();
        hyp_len += h.len();
        ref_len += r.len();
        for n in 1..=4 {
            let mut rc: HashMap<&[&str], usize> = HashMap::new();
            for g in r.windows(n) {
                *rc.entry(g).or_default() += 1;
            }
            let mut hc: HashMap<&[&str], usize> = HashMap::new();
            for g in h.windows(n) {
                *hc.entry(g).or_default() += 1;
            }
            matches[n - 1] += hc
                .iter()
                .map(|(g, c)| (*c).min(rc.get(g).copied().unwrap_or(0)))
                .sum::<usize>();
            totals[n - 1] += h.len().saturating_sub(n - 1);
        }
    }
    let brevity_penalty = if hyp_len == 0 {
        0.0
    } else if hyp_len < ref_len {
        (1.0 - ref_len as f64 / hyp_len as f64).exp()
    } else {
        1.0
    };
    let score = if totals.contains(&0) {
        0.0
    } else {
        let mut smooth = 1.0;
        let log_sum: f64 = (0..4)
            .map(|i| {
                let p = if matches[i] == 0 {
                    smooth *= 2.0;
                    1.0 / (smooth * totals[i] as f64)
                } else {
                    matches[i] as f64 / totals[i] as f64
                };
                p.ln()
            })
            .sum();
        100.0 * brevity_penalty * (log_sum / 4.0).exp()
    };
    Bleu {
        score,
        matches,
        totals,
        brevity_penalty,
        hyp_len,
        ref_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bleu_matches_sacrebleu_on_known_cases() {
        // Expected values: sacrebleu 2.6.0, corpus_bleu(hyps, [refs], tokenize="none").
        let tok = |v: &[&str]| -> Vec<Vec<String>> {
            v.iter()
                .map(|s| s.split(' ').map(String::from).collect())
                .collect()
        };
        type Case<'a> = (&'a [&'a str], &'a [&'a str], f64, [usize; 4]);
        let cases: [Case; 3] = [
            (
                &["the cat sat on the mat .", "two dogs run in the park ."],
                &[
                    "the cat is on the mat .",
                    "two dogs are running in a park .",
                ],
                29.310459788521953,
                [11, 6, 2, 1],
            ),
            (
                &["a man rides a bike", "hello"],
                &["a man is riding a bicycle down the road", "hello world"],
                10.54969271144651,
                [4, 1, 0, 0],
            ),
            (
                &["the the the the the the the"],
                &["the cat is on the mat"],
                7.809849842300637,
                [2, 0, 0, 0],
            ),
        ];
        for (h, r, want, m) in cases {
            let b = corpus_bleu(&tok(h), &tok(r));
            assert!((b.score - want).abs() < 1e-9, "{} vs {want}", b.score);
            assert_eq!(b.matches, m);
        }
        let same = tok(&["a b c d e"]);
        assert!((corpus_bleu(&same, &same).score - 100.0).abs() < 1e-9);
        assert_eq!(corpus_bleu(&tok(&["a b"]), &tok(&["a b c d"])).score, 0.0);
    }
}
