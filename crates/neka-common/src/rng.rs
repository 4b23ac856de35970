//! Seeded randomness: one `--seed` drives weight init, dropout and shuffling.
//!
//! candle's CPU backend draws from an unseedable thread RNG (`Device::set_seed` fails on
//! CPU), so neither `Tensor::rand`-based init nor `candle_nn::Dropout` can reproduce a run.
//! neka draws every random number on the host from ChaCha8 generators instead:
//!
//! * the **model RNG** ([`seed`], [`with_rng`]) — per thread, like PyTorch's
//!   `torch.manual_seed` — feeds weight init ([`crate::init`]) and dropout masks
//!   ([`crate::nn::Dropout`]);
//! * the **data RNG** ([`DataRng`]) — owned by the batch iterator's caller — shuffles.
//!
//! Both states serialise to JSON, so `--resume` continues the exact same random stream.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;

thread_local! {
    static MODEL_RNG: RefCell<ChaCha8Rng> = RefCell::new(ChaCha8Rng::seed_from_u64(0));
}

/// Reseeds this thread's model RNG (weight init and dropout).
pub fn seed(seed: u64) {
    MODEL_RNG.with(|r| *r.borrow_mut() = ChaCha8Rng::seed_from_u64(seed));
}

/// Runs `f` with this thread's model RNG.
pub fn with_rng<T>(f: impl FnOnce(&mut ChaCha8Rng) -> T) -> T {
    MODEL_RNG.with(|r| f(&mut r.borrow_mut()))
}

/// The model RNG's full state, for checkpoints.
pub fn state() -> ChaCha8Rng {
    MODEL_RNG.with(|r| r.borrow().clone())
}

/// Restores the model RNG from a checkpointed [`state`].
pub fn set_state(state: ChaCha8Rng) {
    MODEL_RNG.with(|r| *r.borrow_mut() = state);
}

/// `n` samples of U(lo, hi) from the model RNG, as f32.
pub fn uniform_vec(n: usize, lo: f64, hi: f64) -> Vec<f32> {
    with_rng(|r| (0..n).map(|_| r.random_range(lo..hi) as f32).collect())
}

/// The data RNG: shuffles training examples. Derived from the same seed as the model RNG
/// but an independent stream, so changing the model (and so how many numbers its init
/// draws) does not change the order the data is seen in.
pub type DataRng = ChaCha8Rng;

/// A data RNG for `seed`.
pub fn data_rng(seed: u64) -> DataRng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(1);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_state_round_trips() {
        seed(7);
        let a = uniform_vec(5, -1.0, 1.0);
        seed(7);
        let b = uniform_vec(5, -1.0, 1.0);
        assert_eq!(a, b);
        let saved = state();
        let json = serde_json::to_string(&saved).unwrap();
        let c = uniform_vec(3, 0.0, 1.0);
        set_state(serde_json::from_str(&json).unwrap());
        assert_eq!(c, uniform_vec(3, 0.0, 1.0));
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
    }
}
