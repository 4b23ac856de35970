//! The notes' claims about recurrent gradients, measured.
//!
//! The notes (RNN의 한계점): because the recurrent parameter is shared by every step,
//! "(1) parameter > 1: the gradient goes to infinity (exploding); (2) parameter < 1: the
//! gradient goes to 0 (vanishing)". Here is that statement on real numbers.
//!
//! The network is the lecture's computational graph without bias or head,
//!
//! ```text
//! h_t = ψ(W h_{t−1} + U x_t),   t = 1 … T,   h_0 = 0,   L = v · h_T  (‖v‖ = 1)
//! ```
//!
//! with ψ = identity (the *linear* RNN) or ψ = tanh, and `W = ρ·Q` for a random orthogonal `Q`
//! ([`orthogonal`]), so the "parameter" of the notes is one number: every eigenvalue of `W`
//! has modulus ρ (spectral radius ρ) and `W` stretches every vector by exactly ρ.
//!
//! One step back through time is the Jacobian
//!
//! ```text
//! ∂h_t/∂h_{t−1} = W                          linear
//! ∂h_t/∂h_{t−1} = diag(1 − h_t²) W           tanh   (tanh′(a) = 1 − tanh²(a) ∈ (0, 1])
//! ```
//!
//! and BPTT multiplies them: `∂L/∂h_{t−1} = (∂h_t/∂h_{t−1})ᵀ ∂L/∂h_t`, so
//!
//! ```text
//! ∂L/∂h_t = (Wᵀ)^{T−t} v                               linear: ‖∂L/∂h_t‖ = ρ^{T−t} exactly
//! ∂L/∂h_t = Wᵀ D_{t+1} Wᵀ D_{t+2} ⋯ Wᵀ D_T v,  D_s = diag(1 − h_s²)
//!                                                      tanh:   ‖∂L/∂h_t‖ ≤ ρ^{T−t}
//! ```
//!
//! (`‖Wᵀ D g‖ = ρ ‖D g‖ ≤ ρ ‖g‖` because `Q` is orthogonal and `0 < 1 − h² ≤ 1`). Hence: for
//! ρ < 1 both vanish geometrically; for ρ > 1 the linear RNN explodes as ρ^{T−t}, while
//! tanh′ ≤ 1 damps the tanh RNN — it still grows while the state is small (`h ≈ 0`,
//! tanh′ ≈ 1: a small `input_scale` in [`FlowConfig`]), and stops growing once the units
//! saturate.
//!
//! [`gradient_flow`] measures `‖∂L/∂h_t‖` for every `t` with candle's autograd;
//! [`gradient_flow_by_hand`] multiplies the Jacobians above explicitly (no autograd), and the
//! tests check that the two agree. The `gradient_flow` example draws the curves
//! (`docs/lecture/rnn_gradient_flow.png`).

use candle_core::{DType, Device, Result, Tensor, Var};

/// The nonlinearity ψ of `h_t = ψ(W h_{t−1} + U x_t)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Psi {
    /// ψ(a) = a: the linear RNN, ψ′ = 1.
    Identity,
    /// ψ = tanh, ψ′ = 1 − tanh² ≤ 1.
    Tanh,
}

impl Psi {
    /// The name in tables and legends: `linear` or `tanh`.
    pub fn name(self) -> &'static str {
        match self {
            Psi::Identity => "linear",
            Psi::Tanh => "tanh",
        }
    }
}

/// One measurement: the network, its recurrent weight and its inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowConfig {
    /// ψ: identity (the linear RNN) or tanh.
    pub psi: Psi,
    /// ρ: `W = ρ·Q`, the spectral radius of `W`.
    pub rho: f64,
    /// `H`, hidden units.
    pub hidden: usize,
    /// `F`, input features.
    pub input_size: usize,
    /// `T`, time steps.
    pub steps: usize,
    /// Standard deviation of each unit's input drive `(U x_t)_j`: `x_t ~ N(0, s²)`,
    /// `U ~ N(0, 1/F)`. Small (say 1e-3) keeps a tanh RNN near `h = 0`, where tanh′ ≈ 1.
    pub input_scale: f64,
    /// Seed of `Q`, `U`, the `x_t` and `v`.
    pub seed: u64,
}

impl FlowConfig {
    /// `H = 32`, `F = 8`, `T = 50`, input scale 1, seed 0.
    pub fn new(psi: Psi, rho: f64) -> Self {
        Self {
            psi,
            rho,
            hidden: 32,
            input_size: 8,
            steps: 50,
            input_scale: 1.0,
            seed: 0,
        }
    }
    /// Sets `T`, the time steps.
    pub fn steps(mut self, t: usize) -> Self {
        self.steps = t;
        self
    }
    /// Sets `H`, the hidden units.
    pub fn hidden(mut self, h: usize) -> Self {
        self.hidden = h;
        self
    }
    /// Sets the standard deviation `s` of the inputs `x_t ~ N(0, s²)`.
    pub fn input_scale(mut self, s: f64) -> Self {
        self.input_scale = s;
        self
    }
    /// Sets the seed of `Q`, `U`, the `x_t` and `v`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The numbers of the experiment, row-major `f64`: `W = ρQ (H, H)`, `U (H, F)`,
    /// `x (T, F)`, `v (H)` with `‖v‖ = 1`.
    pub fn weights(&self) -> FlowWeights {
        let (h, f, t) = (self.hidden, self.input_size, self.steps);
        let w = orthogonal(h, self.seed)
            .into_iter()
            .map(|q| self.rho * q)
            .collect();
        let u = gaussian(h * f, self.seed ^ 0x5555)
            .into_iter()
            .map(|z| z / (f as f64).sqrt())
            .collect();
        let x = gaussian(t * f, self.seed ^ 0xaaaa)
            .into_iter()
            .map(|z| z * self.input_scale)
            .collect();
        let v = gaussian(h, self.seed ^ 0x3333);
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        FlowWeights {
            w,
            u,
            x,
            v: v.into_iter().map(|a| a / n).collect(),
        }
    }
}

/// See [`FlowConfig::weights`].
#[derive(Debug, Clone, PartialEq)]
pub struct FlowWeights {
    /// `W = ρQ`, `(H, H)` row-major.
    pub w: Vec<f64>,
    /// `U ~ N(0, 1/F)`, `(H, F)` row-major.
    pub u: Vec<f64>,
    /// The inputs `x_t ~ N(0, s²)`, `(T, F)` row-major.
    pub x: Vec<f64>,
    /// The loss direction `v (H)`, `‖v‖ = 1` (`L = v · h_T`).
    pub v: Vec<f64>,
}

/// What [`gradient_flow`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct GradientFlow {
    /// The experiment that was measured.
    pub config: FlowConfig,
    /// `h_t` for `t = 0 … T` (`h_0 = 0`).
    pub states: Vec<Vec<f64>>,
    /// `‖∂L/∂h_t‖` for `t = 0 … T`, `L = v · h_T`: the last is `‖v‖ = 1`, the first is
    /// `‖(∂h_T/∂h_0)ᵀ v‖`.
    pub grad_norms: Vec<f64>,
}

impl GradientFlow {
    /// `‖∂L/∂h_{T−k}‖` for `k = 0 … T` steps back through time (linear RNN: `ρ^k`).
    pub fn steps_back(&self) -> Vec<f64> {
        self.grad_norms.iter().rev().copied().collect()
    }
    /// `‖(∂h_T/∂h_0)ᵀ v‖`: the gradient that reaches the start of the sequence.
    pub fn at_start(&self) -> f64 {
        self.grad_norms[0]
    }
}

/// Runs `h_t = ψ(W h_{t−1} + U x_t)` for `T` steps on `device` (in f64) and back-propagates
/// `L = v · h_T` with candle's autograd. Each `h_t` gets a zero variable added
/// (`h_t + z_t`, a probe), so that `∂L/∂z_t = ∂L/∂h_t` survives candle's backward pass.
pub fn gradient_flow(cfg: &FlowConfig, device: &Device) -> Result<GradientFlow> {
    let (h, f, t) = (cfg.hidden, cfg.input_size, cfg.steps);
    let wts = cfg.weights();
    let w = Tensor::from_vec(wts.w, (h, h), device)?;
    let u = Tensor::from_vec(wts.u, (h, f), device)?;
    let x = Tensor::from_vec(wts.x, (t, f), device)?;
    let v = Tensor::from_vec(wts.v, (1, h), device)?;
    // Row vectors: h_t (1, H) = ψ(h_{t−1} Wᵀ + x_t Uᵀ), i.e. the column form W h_{t−1} + U x_t.
    let w_t = w.t()?;
    let drive = x.matmul(&u.t()?)?; // (T, H): U x_t for every t, one matmul
    let h0 = Var::zeros((1, h), DType::F64, device)?;
    let mut state = h0.as_tensor().clone();
    let mut probes = Vec::with_capacity(t);
    let mut states = vec![vec![0.0; h]];
    for s in 0..t {
        let pre = (state.matmul(&w_t)? + drive.narrow(0, s, 1)?)?;
        let next = match cfg.psi {
            Psi::Identity => pre,
            Psi::Tanh => pre.tanh()?,
        };
        let z = Var::zeros((1, h), DType::F64, device)?;
        state = (next + z.as_tensor())?;
        states.push(state.flatten_all()?.to_vec1::<f64>()?);
        probes.push(z);
    }
    let loss = (state * v)?.sum_all()?;
    let grads = loss.backward()?;
    let norm = |x: &Tensor| -> Result<f64> {
        match grads.get(x) {
            Some(g) => g.sqr()?.sum_all()?.sqrt()?.to_scalar::<f64>(),
            None => Ok(0.0), // no path from h_t to L (cannot happen for T ≥ 1)
        }
    };
    let mut grad_norms = Vec::with_capacity(t + 1);
    grad_norms.push(norm(h0.as_tensor())?);
    for z in &probes {
        grad_norms.push(norm(z.as_tensor())?);
    }
    Ok(GradientFlow {
        config: *cfg,
        states,
        grad_norms,
    })
}

/// The same numbers as [`gradient_flow`] without autograd: the forward loop, then the
/// explicit BPTT recursion `g_T = v`, `g_{t−1} = Wᵀ (ψ′_t ⊙ g_t)` with `ψ′_t = 1` (linear) or
/// `1 − h_t²` (tanh) — the transposed Jacobians `(diag(ψ′_t) W)ᵀ` applied one by one.
/// Returns `‖g_t‖` for `t = 0 … T`.
pub fn gradient_flow_by_hand(cfg: &FlowConfig) -> Vec<f64> {
    let (h, f, t) = (cfg.hidden, cfg.input_size, cfg.steps);
    let wts = cfg.weights();
    let mut states = vec![vec![0.0; h]];
    for s in 0..t {
        let prev = &states[s];
        let next: Vec<f64> = (0..h)
            .map(|i| {
                let rec: f64 = (0..h).map(|j| wts.w[i * h + j] * prev[j]).sum();
                let inp: f64 = (0..f).map(|k| wts.u[i * f + k] * wts.x[s * f + k]).sum();
                match cfg.psi {
                    Psi::Identity => rec + inp,
                    Psi::Tanh => (rec + inp).tanh(),
                }
            })
            .collect();
        states.push(next);
    }
    let mut g = wts.v.clone();
    let mut norms = vec![0.0; t + 1];
    norms[t] = l2(&g);
    for s in (1..=t).rev() {
        // g ← ψ′_s ⊙ g, then g ← Wᵀ g
        let d: Vec<f64> = (0..h)
            .map(|i| match cfg.psi {
                Psi::Identity => g[i],
                Psi::Tanh => g[i] * (1.0 - states[s][i] * states[s][i]),
            })
            .collect();
        g = (0..h)
            .map(|j| (0..h).map(|i| wts.w[i * h + j] * d[i]).sum())
            .collect();
        norms[s - 1] = l2(&g);
    }
    norms
}

fn l2(x: &[f64]) -> f64 {
    x.iter().map(|a| a * a).sum::<f64>().sqrt()
}

/// A random `n × n` orthogonal matrix `Q` (`QᵀQ = I`), row-major: Gram–Schmidt (twice, for
/// f64-exact orthogonality) on the rows of a seeded Gaussian matrix. Every eigenvalue of `ρQ`
/// has modulus ρ, and `‖ρQx‖ = ρ‖x‖` for every `x`.
pub fn orthogonal(n: usize, seed: u64) -> Vec<f64> {
    let mut q = gaussian(n * n, seed);
    for i in 0..n {
        for _pass in 0..2 {
            for j in 0..i {
                let dot: f64 = (0..n).map(|k| q[i * n + k] * q[j * n + k]).sum();
                for k in 0..n {
                    q[i * n + k] -= dot * q[j * n + k];
                }
            }
        }
        let norm = l2(&q[i * n..(i + 1) * n]);
        for k in 0..n {
            q[i * n + k] /= norm;
        }
    }
    q
}

/// `n` deterministic N(0, 1) draws (SplitMix64 + Box–Muller), so that every test, run and
/// figure sees the same numbers on every machine.
pub fn gaussian(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut uniform = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // (0, 1]: never 0, so ln is finite
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    };
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let (a, b) = (uniform(), uniform());
        let r = (-2.0 * a.ln()).sqrt();
        let th = 2.0 * std::f64::consts::PI * b;
        out.push(r * th.cos());
        out.push(r * th.sin());
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthogonal_is_orthogonal() {
        let n = 32;
        let q = orthogonal(n, 7);
        let mut worst = 0f64;
        for i in 0..n {
            for j in 0..n {
                let dot: f64 = (0..n).map(|k| q[i * n + k] * q[j * n + k]).sum();
                worst = worst.max((dot - f64::from(u8::from(i == j))).abs());
            }
        }
        assert!(worst < 1e-13, "|QQᵀ − I| = {worst:e}");
        let g = gaussian(20_000, 1);
        let mean = g.iter().sum::<f64>() / g.len() as f64;
        let var = g.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / g.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.03,
            "{mean} {var}"
        );
    }

    #[test]
    fn analysis_autograd_matches_the_jacobian_product() -> Result<()> {
        for psi in [Psi::Identity, Psi::Tanh] {
            for rho in [0.5, 1.0, 1.5] {
                let cfg = FlowConfig::new(psi, rho).steps(30).input_scale(0.5);
                let auto = gradient_flow(&cfg, &Device::Cpu)?.grad_norms;
                let hand = gradient_flow_by_hand(&cfg);
                assert_eq!(auto.len(), 31);
                for (t, (a, b)) in auto.iter().zip(&hand).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-10 * b,
                        "{psi:?} rho {rho} t {t}: autograd {a:e} vs by hand {b:e}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn analysis_linear_rnn_is_exactly_rho_to_the_k() -> Result<()> {
        let flow = gradient_flow(&FlowConfig::new(Psi::Identity, 1.1), &Device::Cpu)?;
        for (k, g) in flow.steps_back().iter().enumerate() {
            let want = 1.1f64.powi(k as i32);
            assert!((g / want - 1.0).abs() < 1e-12, "k {k}: {g} vs {want}");
        }
        assert!(flow.states[0].iter().all(|&h| h == 0.0));
        Ok(())
    }
}
