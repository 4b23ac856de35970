//! Which variables of a [`VarMap`] an optimizer trains: the parameters, not the buffers
//! (batch norm's running statistics).

use candle_core::Var;
use candle_nn::VarMap;

/// The names PyTorch gives the *buffers* a model keeps next to its parameters: batch norm's
/// running statistics. They live in the [`VarMap`] (so checkpoints and `--resume` carry them)
/// but are not trained: the forward pass in training mode updates them, no optimizer does.
pub const BUFFER_NAMES: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// Whether the variable `name` (e.g. `layer1.0.bn1.running_mean`) is a buffer, not a
/// parameter: its last dotted component is one of [`BUFFER_NAMES`].
pub fn is_buffer(name: &str) -> bool {
    BUFFER_NAMES.contains(&name.rsplit('.').next().unwrap_or(name))
}

/// `(parameters, buffer values)` of `varmap`: the element counts of its trainable variables
/// and of its buffers ([`is_buffer`]), counted apart.
pub fn count_parameters(varmap: &VarMap) -> (usize, usize) {
    let data = varmap.data().lock().unwrap();
    let buffers: usize = data
        .iter()
        .filter(|(k, _)| is_buffer(k))
        .map(|(_, v)| v.elem_count())
        .sum();
    let all: usize = data.values().map(|v| v.elem_count()).sum();
    (all - buffers, buffers)
}

/// The trained variables of `varmap`, sorted by name: every variable except the buffers
/// ([`is_buffer`]).
pub fn parameters(varmap: &VarMap) -> Vec<(String, Var)> {
    let mut params: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| !is_buffer(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}
