//! Gradient clipping and the optimisers, with PyTorch's update formulas.

use serde::{Deserialize, Serialize};

use super::params::{ParamLayout, Params};
use super::scalar::{Scalar, all_finite, sum_sq};

/// Which update rule to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// `torch.optim.SGD` (with optional momentum and L2 weight decay).
    Sgd,
    /// `torch.optim.Adam` (weight decay as L2 added to the gradient).
    Adam,
    /// `torch.optim.AdamW` (decoupled weight decay).
    Adamw,
}

/// Optimiser settings; fields that do not apply to `kind` are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Update rule.
    pub kind: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
    /// SGD momentum (0 disables it; dampening 0, no Nesterov).
    pub momentum: f64,
    /// Adam's (beta1, beta2).
    pub betas: [f64; 2],
    /// Adam's epsilon, added after the bias-corrected square root.
    pub eps: f64,
    /// Weight decay: L2 for SGD and Adam, decoupled for AdamW.
    pub weight_decay: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Adam,
            lr: 1e-3,
            momentum: 0.0,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// What `clip_grad_norm` found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipReport {
    /// Global L2 norm of all gradients before clipping.
    pub total_norm: f64,
    /// The factor the gradients were multiplied by (1 when not clipped).
    pub coef: f64,
}

/// `torch.nn.utils.clip_grad_norm_` over every tensor at once:
/// `coef = min(1, max_norm / (total_norm + 1e-6))`, then `g *= coef`.
#[inline(always)]
pub fn clip_grad_norm<S: Scalar>(grads: &mut Params<S>, max_norm: f64) -> ClipReport {
    let total_norm = sum_sq(grads.flat()).f64().sqrt();
    let coef = (max_norm / (total_norm + 1e-6)).min(1.0);
    if coef < 1.0 {
        let c = S::of(coef);
        grads.data.mapv_inplace(|g| g * c);
    }
    ClipReport { total_norm, coef }
}

/// An optimiser's moments and step count, shaped like the parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer<S> {
    /// The settings.
    pub config: OptimizerConfig,
    /// Steps taken (Adam's `t`).
    pub step: u64,
    /// Adam's `exp_avg` or SGD's `momentum_buffer` (empty when unused).
    pub m: Params<S>,
    /// Adam's `exp_avg_sq` (empty when unused).
    pub v: Params<S>,
}

impl<S: Scalar> Optimizer<S> {
    /// Fresh state for a network laid out as `layout`.
    pub fn new(config: OptimizerConfig, layout: &ParamLayout) -> Self {
        let empty = || Params {
            data: ndarray::Array1::zeros(0),
        };
        let (m, v) = match config.kind {
            OptimizerKind::Sgd if config.momentum == 0.0 => (empty(), empty()),
            OptimizerKind::Sgd => (Params::zeros(layout), empty()),
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                (Params::zeros(layout), Params::zeros(layout))
            }
        };
        Optimizer {
            config,
            step: 0,
            m,
            v,
        }
    }

    /// Applies one update of `grads` to `params`, or none at all.
    ///
    /// The new weights and moments are written into `spare` and swapped in only
    /// when every one of them is finite; otherwise nothing changes (not even the
    /// step count) and the update is [`Update::RolledBack`]. Swapping buffers
    /// costs nothing, where copying the old weights aside would cost a pass over
    /// them on every update. `grads` may be modified (weight decay).
    #[inline(always)]
    pub fn update(
        &mut self,
        params: &mut Params<S>,
        grads: &mut Params<S>,
        spare: &mut Spare<S>,
    ) -> Update {
        let cfg = self.config;
        self.step += 1;
        let lr = S::of(cfg.lr);
        let wd = S::of(cfg.weight_decay);
        let p = params.flat();
        let g = grads.flat_mut();
        let n = p.len();
        let p1 = &mut spare.p.flat_mut()[..n];
        match cfg.kind {
            OptimizerKind::Sgd => {
                if cfg.weight_decay != 0.0 {
                    for (gi, &pi) in g.iter_mut().zip(p.iter()) {
                        *gi += wd * pi;
                    }
                }
                if cfg.momentum != 0.0 {
                    let mu = S::of(cfg.momentum);
                    let (b0, b1) = (self.m.flat(), spare.m.flat_mut());
                    let first = self.step == 1;
                    for i in 0..n {
                        b1[i] = if first { g[i] } else { mu * b0[i] + g[i] };
                        p1[i] = p[i] - lr * b1[i];
                    }
                } else {
                    for i in 0..n {
                        p1[i] = p[i] - lr * g[i];
                    }
                }
            }
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                // AdamW's decay multiplies the weights before the step (`keep`);
                // Adam's is L2, added to the gradient.
                let mut keep = S::one();
                if cfg.weight_decay != 0.0 {
                    if cfg.kind == OptimizerKind::Adam {
                        for (gi, &pi) in g.iter_mut().zip(p.iter()) {
                            *gi += wd * pi;
                        }
                    } else {
                        keep = S::of(1.0 - cfg.lr * cfg.weight_decay);
                    }
                }
                let [b1, b2] = cfg.betas;
                // PyTorch computes the bias corrections in double precision.
                // Saturating: past 2^31 steps β^t is 0 in f64 either way, where a
                // wrapping cast would turn every weight into NaN.
                let t = self.step.min(i32::MAX as u64) as i32;
                let step_size = S::of(cfg.lr / (1.0 - b1.powi(t)));
                // Multiplying by 1/sqrt(1 - β2^t) instead of dividing saves a division
                // per parameter; it differs from PyTorch's rounding by at most an ulp.
                let inv_bc2_sqrt = S::of(1.0 / (1.0 - b2.powi(t)).sqrt());
                let (b1s, b2s) = (S::of(b1), S::of(b2));
                let (c1, c2) = (S::of(1.0 - b1), S::of(1.0 - b2));
                let eps = S::of(cfg.eps);
                let (m0, v0) = (&self.m.flat()[..n], &self.v.flat()[..n]);
                let (m1, v1) = (&mut spare.m.flat_mut()[..n], &mut spare.v.flat_mut()[..n]);
                let g = &g[..n];
                let decayed = cfg.kind == OptimizerKind::Adamw && cfg.weight_decay != 0.0;
                for i in 0..n {
                    let gi = g[i];
                    m1[i] = b1s * m0[i] + c1 * gi;
                    v1[i] = b2s * v0[i] + c2 * gi * gi;
                    let denom = v1[i].sqrt() * inv_bc2_sqrt + eps;
                    // `p * 1` is exact, but skipping it keeps the loop as it was.
                    let base = if decayed { p[i] * keep } else { p[i] };
                    p1[i] = base - step_size * (m1[i] / denom);
                }
            }
        }
        if !(all_finite(&spare.p.flat()[..n])
            && all_finite(spare.m.flat())
            && all_finite(spare.v.flat()))
        {
            self.step -= 1;
            return Update::RolledBack;
        }
        std::mem::swap(params, &mut spare.p);
        std::mem::swap(&mut self.m, &mut spare.m);
        std::mem::swap(&mut self.v, &mut spare.v);
        Update::Applied
    }
}

/// What [`Optimizer::update`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// The new weights replaced the old.
    Applied,
    /// A new weight or moment was not finite: the old weights stay.
    RolledBack,
}

/// The buffers an update writes into before they replace the live ones,
/// shaped like one model's parameters and moments.
#[derive(Clone, Debug)]
pub struct Spare<S> {
    p: Params<S>,
    m: Params<S>,
    v: Params<S>,
}

impl<S: Scalar> Spare<S> {
    /// Spare buffers for an optimiser with `config` over `layout`.
    pub fn new(config: OptimizerConfig, layout: &ParamLayout) -> Self {
        let moments = Optimizer::<S>::new(config, layout);
        Spare {
            p: Params::zeros(layout),
            m: moments.m,
            v: moments.v,
        }
    }
}

/// True when every gradient is finite (the non-finite guard's check).
pub fn grads_finite<S: Scalar>(grads: &Params<S>) -> bool {
    all_finite(grads.flat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CellKind;
    use crate::model::params::Dims;

    #[test]
    fn adam_past_two_to_the_thirty_one_steps_stays_finite() {
        let layout = ParamLayout::new(Dims {
            cell: CellKind::Gru,
            inputs: 1,
            hidden: 3,
            layers: 1,
            outputs: 1,
        });
        let cfg = OptimizerConfig {
            kind: OptimizerKind::Adam,
            ..OptimizerConfig::default()
        };
        let mut opt = Optimizer::<f64>::new(cfg, &layout);
        let mut spare = Spare::new(cfg, &layout);
        opt.step = i32::MAX as u64 - 1;
        let mut params = Params::<f64>::zeros(&layout);
        for (i, p) in params.flat_mut().iter_mut().enumerate() {
            *p = 0.01 * i as f64;
        }
        for _ in 0..3 {
            let mut grads = Params::<f64>::zeros(&layout);
            grads.flat_mut().iter_mut().for_each(|g| *g = 0.5);
            assert_eq!(
                opt.update(&mut params, &mut grads, &mut spare),
                Update::Applied
            );
            assert!(
                params.flat().iter().all(|p| p.is_finite()),
                "step {}: {:?}",
                opt.step,
                params.flat()
            );
        }
        assert_eq!(opt.step, i32::MAX as u64 + 2);
    }

    fn layout() -> ParamLayout {
        ParamLayout::new(Dims {
            cell: CellKind::Lstm,
            inputs: 1,
            hidden: 2,
            layers: 1,
            outputs: 1,
        })
    }

    /// Runs one update whose new values overflow f32 and checks nothing moved.
    fn assert_rolls_back(cfg: OptimizerConfig, grad: f32) {
        let layout = layout();
        let mut opt = Optimizer::<f32>::new(cfg, &layout);
        let mut spare = Spare::new(cfg, &layout);
        let mut params = Params::<f32>::zeros(&layout);
        params.flat_mut().iter_mut().for_each(|p| *p = 1e10);
        let mut grads = Params::<f32>::zeros(&layout);
        grads.flat_mut().iter_mut().for_each(|g| *g = 1.0);
        // A first, harmless update, so that the moments are not all zero.
        assert_eq!(
            opt.update(&mut params, &mut grads, &mut spare),
            Update::Applied
        );
        let before = (params.clone(), opt.clone());
        grads.flat_mut().iter_mut().for_each(|g| *g = grad);
        assert!(grads_finite(&grads));
        assert_eq!(
            opt.update(&mut params, &mut grads, &mut spare),
            Update::RolledBack
        );
        assert_eq!((params, opt), before, "{:?}", cfg.kind);
    }

    #[test]
    fn an_update_that_overflows_changes_nothing() {
        // Adam: (1 - β2) g² = 1e57 overflows the second moment.
        let adam = OptimizerConfig::default();
        assert_rolls_back(adam, 1e30);
        // SGD: a finite gradient times a huge step overflows the weights.
        let sgd = OptimizerConfig {
            kind: OptimizerKind::Sgd,
            lr: 1e30,
            ..OptimizerConfig::default()
        };
        assert_rolls_back(sgd, 1e10);
        let momentum = OptimizerConfig {
            momentum: 0.9,
            ..sgd
        };
        assert_rolls_back(momentum, 1e10);
    }
}
