//! Learning-rate schedules, applied at the start of each epoch (0-based `epoch`).
//!
//! Each schedule is one file: a struct of its numbers that implements [`Schedule`] (the rate
//! per epoch, its checks, its `NAME:ARG:…` form). **A new schedule** is one such file plus
//! one line in the `schedules!` list below.

mod cosine;
mod step;
mod warmup_cosine;

pub use cosine::Cosine;
pub use step::Step;
pub use warmup_cosine::WarmupCosine;

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// One learning-rate schedule (a variant of [`LrSchedule`]).
pub trait Schedule {
    /// The schedule's form in [`LrSchedule::parse`], e.g. `step[:STEP_SIZE[:GAMMA]]`.
    fn usage() -> &'static str
    where
        Self: Sized;
    /// Reads the schedule from its arguments (`args.num(0, …)` is the first after the name).
    fn parse(args: &Args) -> Result<Self>
    where
        Self: Sized;
    /// The learning rate for 0-based `epoch` given the base rate.
    fn lr_at(&self, base: f64, epoch: usize) -> f64;
    /// Checks the schedule's numbers; errors name the `schedule` field.
    fn validate(&self) -> Result<()>;
    /// Adapts a schedule that spans the `planned` epochs of a run to a run of `epochs`
    /// (a cosine with `t_max = planned` gets `t_max = epochs`). Default: unchanged.
    fn span(&mut self, _planned: usize, _epochs: usize) {}
}

/// The arguments of a schedule's `NAME:ARG:…` form, for [`Schedule::parse`].
pub struct Args<'a> {
    text: &'a str,
    parts: Vec<&'a str>,
    /// The run's epochs (the usual default length of a schedule).
    pub epochs: usize,
}

impl Args<'_> {
    /// Argument `i` (0-based, after the name) as a number, if given.
    pub fn num(&self, i: usize, field: &str) -> Result<Option<f64>> {
        self.parts
            .get(i)
            .map(|p| {
                p.parse::<f64>()
                    .map_err(|_| invalid(format!("`{}`: {field} `{p}` is not a number", self.text)))
            })
            .transpose()
    }

    /// Argument `i` as a whole number of epochs, if given.
    pub fn epochs_arg(&self, i: usize, field: &str) -> Result<Option<usize>> {
        match self.num(i, field)? {
            Some(v) if v < 0.0 || v.fract() != 0.0 || !v.is_finite() => Err(invalid(format!(
                "`{}`: {field} {v} must be a whole number of epochs",
                self.text
            ))),
            v => Ok(v.map(|v| v as usize)),
        }
    }
}

/// An [`Error::Config`] for the `schedule` field.
pub(super) fn invalid(msg: impl Into<String>) -> Error {
    Error::config("schedule", msg)
}

/// Generates [`LrSchedule`] from the list of schedules: the enum (serialised as
/// `{"name": NAME, <numbers>}`), parsing by name and the dispatch to [`Schedule`].
macro_rules! schedules {
    ($($variant:ident($ty:ty) = $name:literal),+ $(,)?) => {
        /// Learning-rate schedule, applied at the start of each epoch (0-based `epoch`).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
        #[serde(tag = "name")]
        pub enum LrSchedule {
            /// The base rate throughout.
            #[default]
            #[serde(rename = "constant")]
            Constant,
            $(
                #[doc = concat!(
                    "`", $name, "`: [`", stringify!($ty), "`] with its numbers."
                )]
                #[serde(rename = $name)]
                $variant($ty),
            )+
        }

        impl LrSchedule {
            fn schedule(&self) -> Option<&dyn Schedule> {
                match self {
                    Self::Constant => None,
                    $(Self::$variant(s) => Some(s),)+
                }
            }

            fn schedule_mut(&mut self) -> Option<&mut dyn Schedule> {
                match self {
                    Self::Constant => None,
                    $(Self::$variant(s) => Some(s),)+
                }
            }

            fn parse_unchecked(s: &str, epochs: usize) -> Result<Self> {
                let mut parts = s.split(':');
                let name = parts.next().unwrap_or_default();
                let args = Args { text: s, parts: parts.collect(), epochs };
                match name {
                    "constant" | "none" => Ok(Self::Constant),
                    $($name => Ok(Self::$variant(<$ty>::parse(&args)?)),)+
                    other => Err(invalid(format!(
                        "`{other}`: expected constant, {}",
                        [$(<$ty as Schedule>::usage()),+].join(", ")
                    ))),
                }
            }
        }
    };
}

// The registry: one line per schedule.
schedules! {
    Step(Step) = "step",
    Cosine(Cosine) = "cosine",
    WarmupCosine(WarmupCosine) = "warmup-cosine",
}

impl LrSchedule {
    /// The learning rate for `epoch` given the base rate.
    pub fn lr_at(&self, base: f64, epoch: usize) -> f64 {
        self.schedule().map_or(base, |s| s.lr_at(base, epoch))
    }

    /// Checks the schedule's numbers (see each schedule's `validate`): e.g. a step size and
    /// `T_MAX` of at least 1 epoch, `γ` finite and > 0, `η_min` finite and ≥ 0.
    pub fn validate(&self) -> Result<()> {
        self.schedule().map_or(Ok(()), |s| s.validate())
    }

    /// This schedule for a run of `epochs` instead of `planned`: a cosine that spans the
    /// planned run (`t_max = planned`) spans the new one; anything else is unchanged.
    pub fn spanning(mut self, planned: usize, epochs: usize) -> Self {
        if let Some(s) = self.schedule_mut() {
            s.span(planned, epochs);
        }
        self
    }

    /// Parses `constant`, `step[:STEP_SIZE[:GAMMA]]`, `cosine[:T_MAX]` or
    /// `warmup-cosine:WARMUP[:T_MAX]`; `epochs` is the default `T_MAX`. Values out of range
    /// are errors ([`LrSchedule::validate`]).
    pub fn parse(s: &str, epochs: usize) -> Result<Self> {
        let sched = Self::parse_unchecked(s, epochs)?;
        sched.validate()?;
        Ok(sched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_numbers_are_named_errors() {
        let sched = |s: &str| LrSchedule::parse(s, 3).map_err(|e| e.to_string());
        for bad in [
            "step:0",
            "step:2.5",
            "step:-1",
            "step:2:-0.5",
            "step:2:nan",
            "cosine:0",
            "cosine:1.5",
            "warmup-cosine:0",
            "warmup-cosine:3",
            "warmup-cosine:2:2",
            "warmup-cosine:1.5",
        ] {
            let e = sched(bad).unwrap_err();
            assert!(e.starts_with("invalid schedule:"), "{bad}: {e}");
        }
        assert_eq!(
            sched("step:2:0.5").unwrap(),
            LrSchedule::Step(Step {
                step_size: 2,
                gamma: 0.5
            })
        );
        assert_eq!(
            sched("cosine").unwrap(),
            LrSchedule::Cosine(Cosine {
                t_max: 3,
                eta_min: 0.0
            })
        );
        assert_eq!(
            sched("warmup-cosine:1").unwrap(),
            LrSchedule::WarmupCosine(WarmupCosine {
                warmup: 1,
                t_max: 3,
                eta_min: 0.0
            })
        );
        let e = sched("warp").unwrap_err();
        assert!(e.contains("warmup-cosine:WARMUP[:T_MAX]"), "{e}");
    }

    #[test]
    fn schedules() {
        let s = LrSchedule::parse("step:1:0.7", 10).unwrap();
        assert!((s.lr_at(1.0, 2) - 0.49).abs() < 1e-12);
        let c = LrSchedule::parse("cosine", 10).unwrap();
        assert!((c.lr_at(1.0, 0) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(1.0, 5) - 0.5).abs() < 1e-12);
        assert!(LrSchedule::parse("warp", 3).is_err());
        let w = LrSchedule::parse("warmup-cosine:2:6", 10).unwrap();
        let lrs: Vec<f64> = (0..7).map(|e| w.lr_at(1.0, e)).collect();
        // warm-up base·(e+1)/3, then the cosine over t_max − W = 4 epochs
        let half_cos = |t: f64| (1.0 + (std::f64::consts::PI * t).cos()) / 2.0;
        let want = [
            1.0 / 3.0,
            2.0 / 3.0,
            1.0,
            half_cos(0.25),
            0.5,
            half_cos(0.75),
            0.0,
        ];
        for (got, want) in lrs.iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{lrs:?}");
        }
        // a schedule spanning the planned run spans the new one; another is kept
        assert_eq!(
            w.clone().spanning(6, 8),
            LrSchedule::parse("warmup-cosine:2:8", 10).unwrap()
        );
        assert_eq!(w.clone().spanning(5, 8), w);
        let spanned = LrSchedule::parse("warmup-cosine:2", 10)
            .unwrap()
            .spanning(10, 20);
        assert_eq!(spanned, LrSchedule::parse("warmup-cosine:2", 20).unwrap());
    }
}
