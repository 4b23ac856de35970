//! What the example launchers share: value parsers that check a flag's range when it is
//! parsed (clap prints the allowed range and exits 2), and Unix-friendly process behaviour.

/// `--clip-grad-norm`: a finite number ≥ 0 (0 = no clipping).
pub fn clip_norm(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!(
            "{s}: must be a finite number ≥ 0 (a norm to scale gradients down to; 0 = off)"
        ));
    }
    Ok(v)
}

/// A sampling temperature: a finite number > 0.
pub fn temperature(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!(
            "{s}: must be a finite number > 0 (logits are divided by it)"
        ));
    }
    Ok(v)
}

/// A probability: a number in [0, 1].
pub fn probability(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{s}: must be a number in [0, 1]"));
    }
    Ok(v)
}

/// A count that must be at least 1.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    let v: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s}: not a whole number"))?;
    if v == 0 {
        return Err(format!("{s}: must be at least 1"));
    }
    Ok(v)
}

fn number(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .map_err(|_| format!("{s}: not a number"))
}

/// Lets a closed pipe end the process quietly, as Unix tools do (`translate run … | head`):
/// Rust ignores `SIGPIPE`, so `println!` on a closed pipe panics; this restores the default
/// action. Call it first thing in `main` of a command that prints results.
pub fn quiet_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: sets a signal disposition to its default; no handler code runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Exit status of a run stopped by Ctrl-C, as shells expect (128 + SIGINT).
pub const INTERRUPTED_EXIT: i32 = 130;

/// Ends a training stopped by Ctrl-C (its checkpoint is saved) with exit status 130.
pub fn exit_interrupted() -> ! {
    std::process::exit(INTERRUPTED_EXIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_give_the_range() {
        assert_eq!(clip_norm("0"), Ok(0.0));
        for bad in ["-1", "nan", "inf", "x"] {
            assert!(clip_norm(bad).is_err(), "{bad}");
        }
        assert!(temperature("0").unwrap_err().contains("> 0"));
        assert!(temperature("-1").is_err() && temperature("NaN").is_err());
        assert!(probability("2").unwrap_err().contains("[0, 1]"));
        assert_eq!(probability("0.5"), Ok(0.5));
        assert!(at_least_one("0").unwrap_err().contains("at least 1"));
    }
}
