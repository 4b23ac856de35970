//! Parallel work on candle's own CPU thread pool.

use std::sync::Mutex;

/// Threads of candle's CPU pool (its "barrier pool": the workers plus the calling thread).
pub fn threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}

/// Runs `f` on every item on candle's CPU thread pool, the one its element-wise ops use, and
/// returns the results in item order. One pool for candle's ops and neka's kernels: with a
/// second pool (rayon's) the idle workers of each spin on the cores the other is using, which
/// costs LeNet-5's training about 15 % on 2 cores (neka-cnn's kernels).
pub fn parallel<T: Send, R: Send>(
    items: impl Iterator<Item = T>,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let items: Vec<Mutex<Option<T>>> = items.map(|t| Mutex::new(Some(t))).collect();
    let out: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let run = |i: usize| {
        let item = items[i].lock().unwrap().take().unwrap();
        *out[i].lock().unwrap() = Some(f(item));
    };
    if items.len() <= 1 {
        (0..items.len()).for_each(run);
    } else {
        candle_core::utils::barrier_pool().execute_chunked(items.len(), |r| r.for_each(run));
    }
    out.into_iter()
        .map(|m| m.into_inner().unwrap().unwrap())
        .collect()
}
