//! SGD as the reference trains with it: `torch.optim.SGD(params, lr, momentum, weight_decay)`,
//! dampening 0, no Nesterov (the reference's train.py). Per parameter p with gradient g, in this order:
//!
//! g' = g + decay·p;  buf = g' on the parameter's first step, else momentum·buf + g';  p -= lr·buf.
//!
//! The learning rate multiplies after the momentum accumulation (it changes every iteration of the
//! warm-up, so the order matters). A parameter without a gradient in a step is not touched at all,
//! neither decayed nor moved by its momentum: PyTorch >= 2 `zero_grad` sets gradients to None
//! (the mask-IoU net when a batch has no I term). Before any update, every gradient is checked:
//! one NaN or infinity stops the step with an error naming the iteration and the tensor, and no
//! parameter changes, so the last good checkpoint stays the last good state.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::config::Solver;
use crate::error::{Error, Result};

/// The optimiser over a fixed, named parameter list (the weight store's trainable variables).
pub struct Sgd {
    params: Vec<(String, Var)>,
    momentum: f64,
    decay: f64,
    /// Momentum buffers by parameter key; a key is absent until its parameter's first step.
    buffers: BTreeMap<String, Tensor>,
}

/// What one [`Sgd::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepReport {
    /// Parameters that had a gradient and were updated.
    pub updated: usize,
    /// Parameters without a gradient this step, left as they were.
    pub skipped: usize,
}

impl Sgd {
    pub fn new(params: Vec<(String, Var)>, momentum: f64, decay: f64) -> Self {
        Sgd {
            params,
            momentum,
            decay,
            buffers: BTreeMap::new(),
        }
    }

    /// With the config's momentum and weight decay.
    pub fn from_solver(params: Vec<(String, Var)>, solver: &Solver) -> Self {
        Self::new(params, solver.momentum, solver.decay)
    }

    /// The parameters, in the order they were given.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// One update with learning rate `lr` from `grads` (the backward of the loss).
    /// `iteration` only names the step in errors.
    pub fn step(&mut self, grads: &GradStore, lr: f64, iteration: u64) -> Result<StepReport> {
        let present: Vec<(&String, &Var, &Tensor)> = self
            .params
            .iter()
            .filter_map(|(k, v)| grads.get(v.as_tensor()).map(|g| (k, v, g)))
            .collect();
        check_finite_grads(&present, iteration)?;
        let skipped = self.params.len() - present.len();
        for (key, var, g) in &present {
            // Detached: a gradient computed by candle's own backward ops carries the graph of
            // the step that made it (activations included), and the parameter is a variable; a
            // buffer built from them would keep every earlier step alive (25 MB per iteration of
            // yolact_plus_mini, until the machine ran out of memory).
            let (p, g) = (var.as_tensor().detach(), g.detach());
            let d = if self.decay != 0.0 {
                (&g + p.affine(self.decay, 0.0)?)?
            } else {
                g
            };
            let dir = if self.momentum != 0.0 {
                let buf = match self.buffers.get(*key) {
                    Some(b) => (b.affine(self.momentum, 0.0)? + &d)?,
                    // torch clones the decayed gradient into a new buffer on the first step.
                    None => d.copy()?,
                };
                self.buffers.insert((*key).clone(), buf.clone());
                buf
            } else {
                d
            };
            var.set(&(&p - dir.affine(lr, 0.0)?)?)?;
        }
        Ok(StepReport {
            updated: present.len(),
            skipped,
        })
    }

    /// The momentum buffers by parameter key (what a checkpoint saves).
    pub fn state(&self) -> &BTreeMap<String, Tensor> {
        &self.buffers
    }

    /// Restores buffers saved from [`Sgd::state`]: each must belong to a parameter of this
    /// optimiser and have its shape; they move to the parameter's device.
    pub fn load_state(&mut self, state: BTreeMap<String, Tensor>) -> Result<()> {
        let mut buffers = BTreeMap::new();
        for (k, t) in state {
            let Some((_, var)) = self.params.iter().find(|(p, _)| *p == k) else {
                return Err(Error::Invalid(format!(
                    "optimiser state for `{k}`, which is not a trained parameter here (was the \
                     checkpoint made with another config or --freeze?)"
                )));
            };
            if t.dims() != var.dims() {
                return Err(Error::Invalid(format!(
                    "optimiser state for `{k}` has shape {:?}, the parameter {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            let t = t.to_dtype(var.dtype())?.to_device(var.device())?;
            buffers.insert(k, t);
        }
        self.buffers = buffers;
        Ok(())
    }
}

/// A loss value that is NaN or infinite stops training (issue 12 item 5; the reference only skips
/// the step, which lets a diverged run go on silently).
pub fn check_finite_loss(loss: f64, iteration: u64) -> Result<()> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "iteration {iteration}: the loss is {loss}; training stopped (the last checkpoint \
             saved is the last good state)"
        )))
    }
}

/// One reduction per tensor, one device-to-host copy for all: sum |g| is finite exactly when
/// every element is (a NaN or an infinity propagates; finite f32 sums of this size do not
/// overflow).
fn check_finite_grads(present: &[(&String, &Var, &Tensor)], iteration: u64) -> Result<()> {
    if present.is_empty() {
        return Ok(());
    }
    let sums = present
        .iter()
        .map(|(_, _, g)| g.abs()?.sum_all()?.to_dtype(candle_core::DType::F32))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let sums = Tensor::stack(&sums, 0)?.to_vec1::<f32>()?;
    match sums.iter().position(|s| !s.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::Invalid(format!(
            "iteration {iteration}: the gradient of `{}` holds NaN or infinity; training stopped \
             before the update (the last checkpoint saved is the last good state)",
            present[i].0
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn var(v: &[f32]) -> Var {
        Var::from_tensor(&Tensor::new(v, &Device::Cpu).unwrap()).unwrap()
    }

    fn values(v: &Var) -> Vec<f32> {
        v.as_tensor().to_vec1::<f32>().unwrap()
    }

    /// The loss sum(c * p) has gradient c, so every step's gradient is known by hand.
    fn grads_of(p: &Var, c: &[f32]) -> GradStore {
        let c = Tensor::new(c, &Device::Cpu).unwrap();
        (p.as_tensor() * c)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
    }

    #[test]
    fn two_steps_follow_the_formula_with_the_lr_after_momentum() {
        let p = var(&[1.0, -2.0]);
        let mut sgd = Sgd::new(vec![("w".into(), p.clone())], 0.9, 0.5);
        // Step 1: g' = c + 0.5 p = [3 + 0.5, 1 - 1] = [3.5, 0]; buf = g'; p -= 0.1 buf.
        sgd.step(&grads_of(&p, &[3.0, 1.0]), 0.1, 0).unwrap();
        let v1 = values(&p);
        assert!(
            (v1[0] - 0.65).abs() < 1e-6 && (v1[1] + 2.0).abs() < 1e-6,
            "{v1:?}"
        );
        // Step 2 with lr 0.2: g' = [3 + 0.325, 1 - 1] = [3.325, 0];
        // buf = 0.9 [3.5, 0] + g' = [6.475, 0]; p = [0.65 - 1.295, -2].
        sgd.step(&grads_of(&p, &[3.0, 1.0]), 0.2, 1).unwrap();
        let v2 = values(&p);
        assert!(
            (v2[0] + 0.645).abs() < 1e-6 && (v2[1] + 2.0).abs() < 1e-6,
            "{v2:?}"
        );
        let buf = sgd.state()["w"].to_vec1::<f32>().unwrap();
        assert!(
            (buf[0] - 6.475).abs() < 1e-5 && buf[1].abs() < 1e-6,
            "{buf:?}"
        );
        // The buffer holds no graph: nothing of the steps that made it stays alive.
        assert!(!sgd.state()["w"].track_op());
    }

    #[test]
    fn a_parameter_without_gradient_is_not_touched() {
        let (a, b) = (var(&[1.0]), var(&[2.0]));
        let mut sgd = Sgd::new(
            vec![("a".into(), a.clone()), ("b".into(), b.clone())],
            0.9,
            0.1,
        );
        sgd.step(&grads_of(&b, &[1.0]), 0.5, 0).unwrap();
        let r = sgd.step(&grads_of(&a, &[1.0]), 0.5, 1).unwrap();
        assert_eq!((r.updated, r.skipped), (1, 1));
        // b had one step only: 2 - 0.5 (1 + 0.2) = 1.4; neither decay nor momentum moved it after.
        assert!((values(&b)[0] - 1.4).abs() < 1e-6);
        assert!((values(&a)[0] - 0.45).abs() < 1e-6, "{:?}", values(&a));
    }

    #[test]
    fn a_non_finite_gradient_stops_before_any_update_and_names_the_iteration() {
        let (a, b) = (var(&[1.0]), var(&[2.0]));
        let mut sgd = Sgd::new(
            vec![("a".into(), a.clone()), ("b".into(), b.clone())],
            0.9,
            0.0,
        );
        let loss = ((a.as_tensor() * 1.0).unwrap().sum_all().unwrap()
            + (b.as_tensor().log().unwrap() * f64::NAN)
                .unwrap()
                .sum_all()
                .unwrap())
        .unwrap();
        let e = sgd
            .step(&loss.backward().unwrap(), 0.1, 41)
            .unwrap_err()
            .to_string();
        assert!(e.contains("iteration 41") && e.contains("`b`"), "{e}");
        assert_eq!((values(&a), values(&b)), (vec![1.0], vec![2.0]));
        assert!(sgd.state().is_empty());
        assert!(check_finite_loss(f64::INFINITY, 7)
            .unwrap_err()
            .to_string()
            .contains("iteration 7"));
        assert!(check_finite_loss(1.5, 7).is_ok());
    }

    #[test]
    fn state_loads_only_for_known_parameters_of_the_same_shape() {
        let p = var(&[1.0, 2.0]);
        let mut sgd = Sgd::new(vec![("w".into(), p)], 0.9, 0.0);
        let t = |n: usize| Tensor::zeros(n, DType::F32, &Device::Cpu).unwrap();
        assert!(sgd
            .load_state([("x".to_string(), t(2))].into())
            .unwrap_err()
            .to_string()
            .contains("`x`"));
        assert!(sgd.load_state([("w".to_string(), t(3))].into()).is_err());
        sgd.load_state([("w".to_string(), t(2))].into()).unwrap();
        assert_eq!(sgd.state().len(), 1);
    }
}
