//! The reference's learning-rate schedule and its batch-size autoscale (the
//! reference's train.py), as pure functions of the iteration.
//!
//! Autoscale, for batch b and f = b / 8: the base learning rate times f (a user-given `--lr` is
//! used as given), `max_iter` and every step floor-divided by f; the warm-up is not scaled. The
//! reference divides floats (`800000 // 0.25`); f has a power-of-two denominator, so the integer
//! floor(x · 8 / b) used here is the same number.
//!
//! The reference sets the rate with a small state machine at the start of each iteration: during
//! the warm-up (it <= `lr_warmup_until`) it writes the linear ramp, then any step reached at this
//! very iteration overrides it with lr0 · gamma^k; in between nothing is written, so the last
//! value stays. [`Schedule::lr_at`] computes that value for an uninterrupted run from iteration 0,
//! which is also what a resumed run uses, so a resume continues exactly (the reference's own
//! resume restarts its step counter, which only differs when a step falls inside the warm-up).

use crate::config::Solver;
use crate::error::{Error, Result};

/// The batch size the reference's settings are for.
pub const REFERENCE_BATCH: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The base rate after autoscale (or the user's).
    pub lr0: f64,
    pub gamma: f64,
    pub warmup_init: f64,
    /// 0 = no warm-up.
    pub warmup_until: u64,
    /// Iterations at which the rate drops by `gamma`, ascending, scaled.
    pub steps: Vec<u64>,
    /// Training stops when the iteration reaches this, scaled.
    pub max_iter: u64,
}

impl Schedule {
    /// The schedule for `batch` images per step. `lr` = a user-given base rate (not scaled);
    /// `max_iter` = a user-given iteration count (not scaled), which replaces the config's;
    /// `autoscale` false = the reference's `--no_autoscale`.
    pub fn new(
        solver: &Solver,
        batch: usize,
        lr: Option<f64>,
        max_iter: Option<u64>,
        autoscale: bool,
    ) -> Result<Self> {
        if batch == 0 {
            return Err(Error::Config("the batch size must be at least 1".into()));
        }
        if let Some(lr) = lr.filter(|l| !(l.is_finite() && *l > 0.0)) {
            return Err(Error::Config(format!(
                "the learning rate must be positive, got {lr}"
            )));
        }
        let scale = autoscale && batch != REFERENCE_BATCH;
        let iters = |x: u64| {
            if scale {
                scaled_iters(x, batch)
            } else {
                x
            }
        };
        let lr0 = match lr {
            Some(l) => l,
            None if scale => solver.lr * (batch as f64 / REFERENCE_BATCH as f64),
            None => solver.lr,
        };
        let mut steps: Vec<u64> = solver.lr_steps.iter().map(|&s| iters(s)).collect();
        steps.sort_unstable();
        Ok(Schedule {
            lr0,
            gamma: solver.gamma,
            warmup_init: solver.lr_warmup_init,
            warmup_until: solver.lr_warmup_until,
            steps,
            max_iter: max_iter.unwrap_or_else(|| iters(solver.max_iter)),
        })
    }

    /// Steps reached by iteration `it` (the reference's step index after its catch-up loop).
    pub fn steps_reached(&self, it: u64) -> usize {
        self.steps.iter().filter(|&&s| s <= it).count()
    }

    fn stepped(&self, k: usize) -> f64 {
        // Python's `gamma ** k` is C `pow`, as `powf` is.
        self.lr0 * self.gamma.powf(k as f64)
    }

    fn warm(&self, it: u64) -> f64 {
        // The reference's operation order: (lr - init) * (it / until) + init.
        (self.lr0 - self.warmup_init) * (it as f64 / self.warmup_until as f64) + self.warmup_init
    }

    /// The learning rate of iteration `it` (0-based, counted across epochs).
    pub fn lr_at(&self, it: u64) -> f64 {
        let k = self.steps_reached(it);
        let warmup = self.warmup_until > 0;
        // A step whose iteration is exactly `it` is applied at `it`, after the warm-up write.
        let crossing_now = self.steps.contains(&it);
        if warmup && it <= self.warmup_until {
            return if crossing_now {
                self.stepped(k)
            } else {
                self.warm(it)
            };
        }
        // After the warm-up: the last write wins, a step (at its iteration) or the warm-up's last
        // value (at `warmup_until`; a step at that same iteration came after it).
        let last_step = self.steps.iter().copied().filter(|&s| s <= it).max();
        match last_step {
            Some(s) if !warmup || s >= self.warmup_until => self.stepped(k),
            _ if warmup => self.warm(self.warmup_until),
            _ => self.lr0,
        }
    }
}

/// floor(x / (batch / 8)) as the reference's float floor division gives it.
fn scaled_iters(x: u64, batch: usize) -> u64 {
    let v = u128::from(x) * REFERENCE_BATCH as u128 / batch as u128;
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(batch: usize) -> Schedule {
        Schedule::new(&Solver::default(), batch, None, None, true).unwrap()
    }

    #[test]
    fn batch_eight_is_the_reference_table() {
        let s = reference(8);
        assert_eq!(s.lr_at(0), 1e-4);
        assert!((s.lr_at(250) - 5.5e-4).abs() < 1e-15);
        assert_eq!(s.lr_at(500), 1e-3);
        assert_eq!(s.lr_at(279_999), 1e-3);
        assert!((s.lr_at(280_000) - 1e-4).abs() < 1e-18);
        assert!((s.lr_at(599_999) - 1e-4).abs() < 1e-18);
        assert!((s.lr_at(600_000) - 1e-5).abs() < 1e-19);
        assert!((s.lr_at(700_000) - 1e-6).abs() < 1e-20);
        assert!((s.lr_at(799_999) - 1e-7).abs() < 1e-21);
        assert_eq!(s.max_iter, 800_000);
    }

    #[test]
    fn autoscale_scales_lr_steps_and_length_but_not_the_warmup() {
        let s = reference(2);
        assert_eq!(s.lr0, 1e-3 * 0.25);
        assert_eq!(s.max_iter, 3_200_000);
        assert_eq!(s.steps, vec![1_120_000, 2_400_000, 2_800_000, 3_000_000]);
        assert_eq!(s.lr_at(0), 1e-4);
        assert_eq!(s.lr_at(500), 2.5e-4);
        // Batch 3: 800000 // 0.375 = 2133333.0 in Python.
        assert_eq!(reference(3).max_iter, 2_133_333);
        assert_eq!(reference(3).steps[0], 746_666);
        // A user --lr is used unscaled; the steps still scale.
        let u = Schedule::new(&Solver::default(), 2, Some(0.01), None, true).unwrap();
        assert_eq!((u.lr0, u.steps[0]), (0.01, 1_120_000));
        let off = Schedule::new(&Solver::default(), 2, None, None, false).unwrap();
        assert_eq!((off.lr0, off.max_iter), (1e-3, 800_000));
    }

    #[test]
    fn a_step_inside_the_warmup_applies_only_at_its_iteration() {
        let solver = Solver {
            lr_steps: vec![100],
            ..Solver::default()
        };
        let s = Schedule::new(&solver, 8, None, None, true).unwrap();
        assert!((s.lr_at(100) - 1e-4).abs() < 1e-18); // 1e-3 * 0.1, the step
        let ramp = (1e-3 - 1e-4) * (101.0 / 500.0) + 1e-4;
        assert_eq!(s.lr_at(101), ramp); // the warm-up writes again
        assert_eq!(s.lr_at(900), 1e-3); // and its last value stays
        let no_warmup = Solver {
            lr_warmup_until: 0,
            lr_steps: vec![100],
            ..Solver::default()
        };
        let s = Schedule::new(&no_warmup, 8, None, None, true).unwrap();
        assert_eq!((s.lr_at(0), s.lr_at(99)), (1e-3, 1e-3));
        assert!((s.lr_at(100) - 1e-4).abs() < 1e-18);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(Schedule::new(&Solver::default(), 0, None, None, true).is_err());
        assert!(Schedule::new(&Solver::default(), 8, Some(-1.0), None, true).is_err());
        assert!(Schedule::new(&Solver::default(), 8, Some(f64::NAN), None, true).is_err());
    }
}
