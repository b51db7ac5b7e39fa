//! The online recurrent forecaster: cells, BPTT, optimisers, the per-stream learner.
//!
//! Pure computation: no Kafka, no async, no logging. The pipeline feeds it one
//! event at a time and reads back forecasts and statistics.
//!
//! * [`scalar`]: the `f32`/`f64` element type and the dense kernels.
//! * [`params`]: parameter tensors in PyTorch's `state_dict` layout.
//! * [`network`]: cell equations, stacked forward pass, hand-written BPTT.
//! * [`loss`], [`optim`]: MSE/Huber; clipping, SGD, Adam, AdamW.
//! * [`normalize`]: per-stream input scaling (fixed or running Welford).
//! * [`linear`]: online ridge regression by recursive least squares (the
//!   linear expert and the backtests' linear baseline).
//! * [`moments`]: a one-input stream's own linear weights from its increment moments.
//! * [`stack`]: the per-stream blend of the linear and recurrent experts.
//! * [`learner`]: the online learner that owns weights and per-stream state.
//! * [`checkpoint`]: safetensors files that `torch` can read.
//! * [`rng`]: the seeded generator behind initialisation and synthetic data.

pub mod checkpoint;
pub mod conformal;
pub mod learner;
pub mod linear;
pub mod loss;
pub mod moments;
pub mod network;
pub mod normalize;
pub mod optim;
pub mod params;
pub mod rng;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod simd;
pub mod special;
pub mod stack;

pub use learner::{
    Clock, Combine, Forecaster, LearnError, Learning, ModelConfig, Objective, Predict, StreamStats,
    WeightScope,
};
pub use loss::Loss;
pub use normalize::Normalize;
pub use optim::{OptimizerConfig, OptimizerKind};
pub use params::{CellKind, Dims, ParamLayout, Params};
pub use scalar::Scalar;
