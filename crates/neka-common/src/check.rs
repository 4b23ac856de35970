//! Range checks for a model config's fields, for `Config::validate` functions: each returns
//! a message naming the field and the allowed range.

/// `v ≥ 1`.
pub fn positive(field: &str, v: usize) -> Result<(), String> {
    if v == 0 {
        return Err(format!("field `{field}` is 0: it must be at least 1"));
    }
    Ok(())
}

/// `lo ≤ v ≤ hi`.
pub fn between(field: &str, v: usize, lo: usize, hi: usize) -> Result<(), String> {
    if !(lo..=hi).contains(&v) {
        return Err(format!("field `{field}` is {v}: it must be in {lo}..={hi}"));
    }
    Ok(())
}

/// A probability-like number: finite, `lo ≤ v` and `v < 1` (or `v ≤ 1` when `one_ok`).
pub fn fraction(field: &str, v: f64, one_ok: bool) -> Result<(), String> {
    let ok = v.is_finite() && v >= 0.0 && (v < 1.0 || (one_ok && v == 1.0));
    if !ok {
        let hi = if one_ok { "[0, 1]" } else { "[0, 1)" };
        return Err(format!(
            "field `{field}` is {v}: it must be a number in {hi}"
        ));
    }
    Ok(())
}

/// A finite number ≥ 0.
pub fn non_negative(field: &str, v: f64) -> Result<(), String> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!(
            "field `{field}` is {v}: it must be a finite number ≥ 0"
        ));
    }
    Ok(())
}
