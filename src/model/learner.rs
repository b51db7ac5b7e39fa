//! The online learner: one recurrent state per stream, learning as targets arrive.
//!
//! For every event `x_t` of a stream, [`Forecaster::observe`] does, in order:
//!
//! 1. **Score and learn.** Each earlier forecast gets its component for step
//!    `t` scored against `x_t` (original units). The forecast made after
//!    `x_{t-H}` (H = horizon) now has every target observed, so it can be
//!    learned from: every `update_every` events, one truncated-BPTT step
//!    recomputes the last `tbptt` steps from the stored state entering them,
//!    takes the loss (on that newest complete forecast, or on every forecast in
//!    the window), clips and updates the weights. Nothing is learned from a
//!    forecast before all of its targets are observed: there is no look-ahead.
//! 2. **Advance.** The stream's state consumes `x_t`.
//! 3. **Forecast.** The head maps the new state to the next H steps × targets.
//!
//! Per stream this keeps the hidden state, a ring of the last `tbptt + H - 1`
//! scaled inputs with the state entering it, a [`Normalizer`], and the
//! forecasts still waiting for targets. With [`WeightScope::Shared`] all
//! streams of a forecaster use one set of weights (each with its own state);
//! with [`WeightScope::PerStream`] every stream also owns weights and optimiser.
//!
//! Determinism: the output depends only on the configuration (seed included)
//! and the sequence of `observe` calls, bit for bit.

use serde::{Deserialize, Serialize};

use super::conformal::{self, Calibration};
use super::linear::{CHANGE_BOUND, Lags, LinearConfig, Rls, change_bound, next_change_scale};
use super::loss::Loss;
use super::moments;
use super::network::{StepScratch, Tape, forecast, step};
use super::normalize::{NormPhase, Normalize, Normalizer};
use super::optim::{ClipReport, Optimizer, OptimizerConfig, Spare, Update, clip_grad_norm};
use super::params::{CellKind, Dims, ParamLayout, Params};
use super::rng::Rng;
use super::scalar::{Scalar, sum_sq};
use super::stack::{self, EXPERTS, StackConfig};

/// Which forecasts a TBPTT step learns from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// The newest forecast whose targets are all observed (TBPTT(1, T)).
    Last,
    /// Every forecast made inside the window (the whole-window loss).
    Window,
}

/// Who owns the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightScope {
    /// One set of weights per forecaster, shared by its streams.
    Shared,
    /// Every stream learns its own weights.
    PerStream,
}

/// What the head's output means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Predict {
    /// The head outputs the (scaled) future values.
    Level,
    /// The head outputs the change from the last observed value, so an
    /// untrained model starts as the naive forecast and level shifts are free.
    Delta,
}

/// Whether `observe` trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Learning {
    /// Train online (the default).
    On,
    /// Forecast only; weights stay as they are.
    Off,
}

/// How a forecast is made from the experts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// Per stream, horizon step and target, an online least-squares blend of
    /// the linear autoregression and the recurrent head (see [`super::stack`]).
    Stack,
    /// The recurrent head alone.
    Rnn,
}

/// Everything that defines a forecaster. Defaults live in `config/default.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Recurrent cell: `lstm`, `gru`, `rnn` (tanh) or `rnn_relu`.
    pub cell: CellKind,
    /// Values per event (D).
    pub inputs: usize,
    /// Indices of the values to forecast; empty means all.
    pub targets: Vec<usize>,
    /// Hidden units per layer.
    pub hidden: usize,
    /// Stacked layers.
    pub layers: usize,
    /// Steps ahead each forecast covers.
    pub horizon: usize,
    /// Steps of truncated backpropagation through time.
    pub tbptt: usize,
    /// Events between TBPTT updates (per stream).
    pub update_every: usize,
    /// Which forecasts an update learns from.
    pub objective: Objective,
    /// Training loss.
    pub loss: Loss,
    /// Optimiser settings.
    pub optimizer: OptimizerConfig,
    /// Global gradient-norm clip (`clip_grad_norm_`); 0 disables clipping.
    pub clip_norm: f64,
    /// How values are scaled.
    pub normalize: Normalize,
    /// With `normalize = "warmup"`: events after which the statistics freeze.
    pub normalize_events: u64,
    /// Shared or per-stream weights.
    pub weight_scope: WeightScope,
    /// Level or delta outputs.
    pub predict: Predict,
    /// Online learning on or off.
    pub learning: Learning,
    /// Seed of the weight initialisation.
    pub seed: u64,
    /// How the forecast combines the experts.
    #[serde(default = "combine_rnn")]
    pub combine: Combine,
    /// The linear expert (with `combine = "stack"`).
    #[serde(default)]
    pub linear: LinearConfig,
    /// The stacking weights (with `combine = "stack"`).
    #[serde(default)]
    pub stack: StackConfig,
    /// Levels of the calibrated intervals on every forecast (empty: none).
    /// A configuration written before intervals existed means none.
    #[serde(default)]
    pub intervals: Vec<f64>,
    /// The intervals' step size, relative to the mean absolute residual.
    #[serde(default = "interval_lr")]
    pub interval_lr: f64,
    /// The intervals' integrator gain (0: quantile tracking alone).
    #[serde(default)]
    pub interval_ki: f64,
}

fn interval_lr() -> f64 {
    conformal::Pid::default().lr
}

/// What a configuration written before stacking existed meant.
fn combine_rnn() -> Combine {
    Combine::Rnn
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            cell: CellKind::Lstm,
            inputs: 1,
            targets: Vec::new(),
            hidden: 32,
            layers: 1,
            horizon: 1,
            tbptt: 16,
            update_every: 1,
            objective: Objective::Last,
            loss: Loss::Mse,
            optimizer: OptimizerConfig::default(),
            clip_norm: 1.0,
            normalize: Normalize::Running,
            normalize_events: 0,
            weight_scope: WeightScope::Shared,
            predict: Predict::Delta,
            learning: Learning::On,
            seed: 42,
            combine: Combine::Stack,
            linear: LinearConfig {
                lags: Lags::Auto,
                ..LinearConfig::default()
            },
            stack: StackConfig::default(),
            intervals: vec![0.8, 0.95],
            interval_lr: interval_lr(),
            interval_ki: 0.0,
        }
    }
}

impl ModelConfig {
    /// Checks the settings, naming the first bad key and value.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("inputs", self.inputs),
            ("hidden", self.hidden),
            ("layers", self.layers),
            ("horizon", self.horizon),
            ("tbptt", self.tbptt),
            ("update_every", self.update_every),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(format!("model.{key} = 0: must be at least 1"));
            }
        }
        if let Some(&bad) = self.targets.iter().find(|&&t| t >= self.inputs) {
            return Err(format!(
                "model.targets contains {bad}: there are only {} input values (indices 0..{})",
                self.inputs, self.inputs
            ));
        }
        let o = &self.optimizer;
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            return Err(format!(
                "model.optimizer.lr = {}: must be a positive number",
                o.lr
            ));
        }
        if !(0.0..1.0).contains(&o.betas[0]) || !(0.0..1.0).contains(&o.betas[1]) {
            return Err(format!(
                "model.optimizer.betas = {:?}: each must be in [0, 1)",
                o.betas
            ));
        }
        if self.clip_norm.is_nan() || self.clip_norm < 0.0 {
            return Err(format!(
                "model.clip_norm = {}: must be >= 0",
                self.clip_norm
            ));
        }
        if let Loss::Huber { delta } = self.loss
            && (delta.is_nan() || delta <= 0.0)
        {
            return Err(format!("model.loss.delta = {delta}: must be > 0"));
        }
        if self.normalize == Normalize::Warmup && self.normalize_events == 0 {
            return Err("model.normalize = \"warmup\" needs model.normalize_events >= 1".into());
        }
        self.linear.validate("model.linear")?;
        self.calibration()?;
        self.stack.validate()?;
        self.check_sizes()
    }

    /// Refuses shapes whose memory no machine has, naming the setting,
    /// before anything is allocated (an allocation that large aborts).
    /// Sizes are counted in `f64` so that no product overflows.
    fn check_sizes(&self) -> Result<(), String> {
        let (d, h, l) = (self.inputs as f64, self.hidden as f64, self.layers as f64);
        let g = self.cell.gates() as f64;
        let targets = self.target_indices().len() as f64;
        let horizon = self.horizon as f64;
        let outputs = horizon * targets;
        let params = g * h * (d + 2.0 * h + 2.0) * l + outputs * (h + 1.0);
        if params > MAX_PARAMETERS {
            return Err(format!(
                "model.hidden = {}, model.layers = {}, model.inputs = {}, model.horizon = {}: \
                 {params:.3e} weights, past the {MAX_PARAMETERS:.0} a learner holds",
                self.hidden, self.layers, self.inputs, self.horizon
            ));
        }
        // Per stream: the pending forecasts (with their experts, scales and bounds).
        let stream = horizon * outputs * 6.0 + 4.0 * l * h;
        if stream > MAX_STREAM_ELEMENTS {
            return Err(format!(
                "model.horizon = {} with {} targets and model.inputs = {}: {stream:.3e} values \
                 per stream, past the {MAX_STREAM_ELEMENTS:.0} allowed",
                self.horizon, targets, self.inputs
            ));
        }
        // The tape of one TBPTT window (each step's gates and states) and the ring.
        let tape = (self.tbptt as f64 + horizon) * (l * h * (g + 2.0) + d);
        if tape > MAX_STREAM_ELEMENTS {
            return Err(format!(
                "model.tbptt = {} and model.horizon = {} with model.hidden = {} and \
                 model.layers = {}: a window of {tape:.3e} values, past the \
                 {MAX_STREAM_ELEMENTS:.0} allowed",
                self.tbptt, self.horizon, self.hidden, self.layers
            ));
        }
        let features = (self.linear_lags() as f64 - 1.0) * d + 1.0;
        if features > MAX_LINEAR_FEATURES {
            return Err(format!(
                "model.linear.lags = {} ({} rows) with model.inputs = {}: {features:.0} features, \
                 past the {MAX_LINEAR_FEATURES:.0} the linear expert's covariance allows",
                self.linear.lags,
                self.linear_lags(),
                self.inputs
            ));
        }
        Ok(())
    }

    /// Rows of history the linear expert regresses on (`linear.lags`
    /// resolved for these inputs and horizon: see [`super::linear::auto_lags`]).
    pub fn linear_lags(&self) -> usize {
        self.linear.rows(self.inputs, self.horizon)
    }

    /// The intervals' calibration, `None` without levels.
    pub fn calibration(&self) -> Result<Option<Calibration>, String> {
        if self.intervals.is_empty() {
            return Ok(None);
        }
        if !(self.interval_ki >= 0.0 && self.interval_ki.is_finite()) {
            return Err(format!(
                "model.interval_ki = {}: must be a number >= 0",
                self.interval_ki
            ));
        }
        let pid = conformal::Pid {
            lr: self.interval_lr,
            ki: self.interval_ki,
            ..conformal::Pid::default()
        };
        Calibration::new(&self.intervals, pid).map(Some)
    }

    /// Indices of the forecast values.
    pub fn target_indices(&self) -> Vec<usize> {
        if self.targets.is_empty() {
            (0..self.inputs).collect()
        } else {
            self.targets.clone()
        }
    }

    /// The network shape this configuration implies (head outputs = horizon × targets).
    pub fn dims(&self) -> Dims {
        Dims {
            cell: self.cell,
            inputs: self.inputs,
            hidden: self.hidden,
            layers: self.layers,
            outputs: self.horizon * self.target_indices().len(),
        }
    }
}

/// Why an event was not turned into a forecast.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LearnError {
    /// The event has the wrong number of values.
    #[error("expected {expected} values, got {got}")]
    Width {
        /// Configured inputs.
        expected: usize,
        /// Values in the event.
        got: usize,
    },
    /// A value is NaN or infinite; the stream's state was reset.
    #[error("value {index} is not finite ({value}); the stream's state was reset")]
    NonFinite {
        /// Position of the first bad value.
        index: usize,
        /// The value.
        value: f64,
    },
}

/// Weights, optimiser and update count: what [`WeightScope`] shares or not.
#[derive(Clone, Debug, PartialEq)]
pub struct Model<S> {
    /// The parameters.
    pub params: Params<S>,
    /// The optimiser's moments.
    pub optimizer: Optimizer<S>,
    /// Updates applied so far (the `model_version` of forecasts).
    pub updates: u64,
    /// The linear expert (with `combine = "stack"`): lag features to every
    /// horizon step's change, by recursive least squares.
    pub linear: Option<Rls>,
}

/// Offsets inside a stream's state buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateLayout {
    /// Length of one recurrent state.
    pub state: usize,
    /// Inputs per event.
    pub width: usize,
    /// Targets per step.
    pub targets: usize,
    /// Forecast horizon.
    pub horizon: usize,
    /// Ring capacity in events (`tbptt + horizon - 1`).
    pub ring: usize,
    /// Whether the ring and entering state are kept (learning on).
    pub learning: bool,
    /// Whether the ring's events are read from the linear expert's history
    /// (stacking, with at least as many history rows as ring events): the
    /// history holds the same scaled inputs, so the ring keeps no copy.
    pub ring_in_history: bool,
    /// Rows of scaled inputs kept for the linear expert (`linear.lags + horizon`; 0 without stacking).
    pub history: usize,
    /// Lags of the linear expert's features.
    pub lags: usize,
    /// Experts per stacking cell (0 without stacking).
    pub experts: usize,
    /// Elements of one component's interval calibration (0 without intervals).
    pub calibration: usize,
    /// Elements of one target's anomaly trackers (0 without intervals).
    pub anomaly: usize,
    /// Elements of the stream's own linear weights (stacking with shared
    /// weights: features × horizon × targets; 0 otherwise).
    pub own_linear: usize,
    /// Whether the stream counts its run of events far outside its running
    /// statistics (see [`LEVEL_SHIFT_RUN`]): a running normaliser.
    pub shift_watch: bool,
    /// Elements of the running scale of one-step changes, one per input
    /// (with stacking; see [`super::linear::change_bound`]).
    pub change_scale: usize,
    /// Elements of the increment sums the stream's own linear weights are
    /// solved from (stacking with shared weights, one input, learning on,
    /// `normalize` "warmup" or "none"; see [`super::moments`]); 0 where the
    /// own weights always learn with the pooled covariance.
    pub moments: usize,
    /// Where each [`Region`] starts, and (last) the buffer's length.
    starts: [u32; REGIONS + 1],
}

/// The regions of a stream's buffer, in their order there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Region {
    Live,
    Entering,
    Ring,
    Pending,
    LastRaw,
    History,
    ExpertPending,
    StackCells,
    CalibrationCells,
    PendingScale,
    SeenRange,
    AnomalyCells,
    OwnLinear,
    FarRun,
    ChangeScales,
    Moments,
}

/// How many [`Region`]s a stream's buffer has.
const REGIONS: usize = Region::Moments as usize + 1;

impl Region {
    /// Every region, in order.
    const ALL: [Region; REGIONS] = [
        Region::Live,
        Region::Entering,
        Region::Ring,
        Region::Pending,
        Region::LastRaw,
        Region::History,
        Region::ExpertPending,
        Region::StackCells,
        Region::CalibrationCells,
        Region::PendingScale,
        Region::SeenRange,
        Region::AnomalyCells,
        Region::OwnLinear,
        Region::FarRun,
        Region::ChangeScales,
        Region::Moments,
    ];
}

impl StateLayout {
    fn new(cfg: &ModelConfig) -> Self {
        let mut sl = StateLayout {
            state: cfg.dims().state_len(),
            width: cfg.inputs,
            targets: cfg.target_indices().len(),
            horizon: cfg.horizon,
            ring: cfg.tbptt + cfg.horizon - 1,
            learning: cfg.learning == Learning::On,
            ring_in_history: cfg.learning == Learning::On
                && cfg.combine == Combine::Stack
                && cfg.linear_lags() + cfg.horizon >= cfg.tbptt + cfg.horizon - 1,
            history: match cfg.combine {
                Combine::Stack => cfg.linear_lags() + cfg.horizon,
                Combine::Rnn => 0,
            },
            lags: cfg.linear_lags(),
            experts: match cfg.combine {
                Combine::Stack => EXPERTS,
                Combine::Rnn => 0,
            },
            calibration: match cfg.intervals.len() {
                0 => 0,
                n => conformal::cell_len(n, cfg.interval_ki > 0.0),
            },
            anomaly: conformal::anomaly_len(cfg.intervals.len()),
            own_linear: match (cfg.combine, cfg.weight_scope) {
                (Combine::Stack, WeightScope::Shared) => {
                    cfg.linear.features(cfg.inputs, cfg.horizon)
                        * cfg.horizon
                        * cfg.target_indices().len()
                }
                _ => 0,
            },
            shift_watch: cfg.normalize != Normalize::None,
            change_scale: match cfg.combine {
                Combine::Stack => cfg.inputs,
                Combine::Rnn => 0,
            },
            moments: match (cfg.combine, cfg.weight_scope, cfg.inputs, cfg.learning) {
                (Combine::Stack, WeightScope::Shared, 1, Learning::On)
                    if cfg.normalize != Normalize::Running =>
                {
                    moments::moments_len(cfg.linear_lags(), cfg.horizon)
                }
                _ => 0,
            },
            starts: [0; REGIONS + 1],
        };
        for (i, &r) in Region::ALL.iter().enumerate() {
            let end = sl.starts[i] as usize + sl.size(r);
            sl.starts[i + 1] = u32::try_from(end).expect("a stream's state fits in u32 elements");
        }
        sl
    }
    /// Whether forecasts stack the linear and recurrent experts.
    pub fn stacked(&self) -> bool {
        self.experts > 0
    }
    /// One forecast: horizon × targets.
    pub fn forecast_len(&self) -> usize {
        self.horizon * self.targets
    }
    /// Elements of region `r` of a stream's buffer (the regions lie in
    /// the order of [`Region`]).
    fn size(&self, r: Region) -> usize {
        let fl = self.forecast_len();
        let with_intervals = |n: usize| if self.calibration > 0 { n } else { 0 };
        match r {
            Region::Live => self.state,
            Region::Entering if self.learning => self.state,
            Region::Ring if self.learning && !self.ring_in_history => self.ring * self.width,
            Region::Entering | Region::Ring => 0,
            Region::Pending => self.horizon * fl,
            Region::LastRaw => self.targets,
            Region::History => self.history * self.width,
            Region::ExpertPending => self.horizon * fl * self.experts,
            Region::StackCells if self.stacked() => fl * stack::CELL,
            Region::StackCells => 0,
            Region::CalibrationCells => fl * self.calibration,
            Region::PendingScale => with_intervals(self.horizon * fl * conformal::ISSUED),
            Region::SeenRange => with_intervals(2 * self.targets),
            Region::AnomalyCells => self.targets * self.anomaly,
            Region::OwnLinear => self.own_linear,
            Region::FarRun if self.shift_watch => 1 + 2 * self.width,
            Region::FarRun => 0,
            Region::ChangeScales => self.change_scale,
            Region::Moments => self.moments,
        }
    }
    /// Where region `r` lies in a stream's buffer (read off the starts
    /// [`StateLayout::new`] computed once: the forecast path asks on every event).
    #[inline(always)]
    fn region(&self, r: Region) -> std::ops::Range<usize> {
        let i = r as usize;
        self.starts[i] as usize..self.starts[i + 1] as usize
    }
    fn live(&self) -> std::ops::Range<usize> {
        self.region(Region::Live)
    }
    fn entering(&self) -> std::ops::Range<usize> {
        self.region(Region::Entering)
    }
    fn ring_range(&self) -> std::ops::Range<usize> {
        self.region(Region::Ring)
    }
    /// Where the ring's `j`-th oldest of `len` events starts in a stream's
    /// buffer, its oldest at slot `head`: in the ring, or (with
    /// [`StateLayout::ring_in_history`]) the history's last `len` rows,
    /// which hold the same events until the history shifts in the newest.
    #[inline(always)]
    fn ring_at(&self, head: usize, len: usize, j: usize) -> usize {
        if self.ring_in_history {
            self.history_range().start + (self.history - len + j) * self.width
        } else {
            self.ring_range().start + ((head + j) % self.ring) * self.width
        }
    }
    fn pending(&self) -> std::ops::Range<usize> {
        self.region(Region::Pending)
    }
    fn last_raw(&self) -> std::ops::Range<usize> {
        self.region(Region::LastRaw)
    }
    /// The last `history` scaled inputs, oldest first (a shift register).
    fn history_range(&self) -> std::ops::Range<usize> {
        self.region(Region::History)
    }
    /// The experts' forecast changes behind each pending forecast, `experts` per component.
    fn expert_pending(&self) -> std::ops::Range<usize> {
        self.region(Region::ExpertPending)
    }
    /// One stacking cell (see [`stack::CELL`]) per forecast component.
    fn stack_cells(&self) -> std::ops::Range<usize> {
        self.region(Region::StackCells)
    }
    /// One interval calibration cell (see [`conformal`]) per forecast component.
    fn calibration_cells(&self) -> std::ops::Range<usize> {
        self.region(Region::CalibrationCells)
    }
    /// Each pending forecast component's calibration scales when it was
    /// issued ([`conformal::ISSUED`] each, see [`Calibration::issue`]).
    #[cfg(test)]
    fn pending_scale(&self) -> std::ops::Range<usize> {
        self.region(Region::PendingScale)
    }
    /// The lowest and highest value of each target seen so far (with
    /// intervals): a value new to that range scores as anomalous as it gets.
    fn seen_range(&self) -> std::ops::Range<usize> {
        self.region(Region::SeenRange)
    }
    /// Each target's anomaly trackers (see [`Calibration::observe_anomaly`]).
    #[cfg(test)]
    fn anomaly_cells(&self) -> std::ops::Range<usize> {
        self.region(Region::AnomalyCells)
    }
    /// The stream's own weights of the linear expert, laid out as
    /// [`Rls::weight`], learned with the covariance pooled over the streams
    /// (see [`Rls::update_own`]); empty unless weights are shared.
    fn own_linear_range(&self) -> std::ops::Range<usize> {
        self.region(Region::OwnLinear)
    }
    /// Whether a stream's ring counters (read back from a checkpoint) fit
    /// this layout and the events it has seen: training reads `ring_len`
    /// events from `ring_head` on, so counters that do not would read past
    /// the events held (or the ring). The reason when they do not.
    pub fn check_counters(&self, seen: u64, ring_len: u64, ring_head: u64) -> Result<(), String> {
        let ring = self.ring as u64;
        if ring_len > ring || ring_head >= ring.max(1) || (self.ring_in_history && ring_head != 0) {
            return Err(format!(
                "ring counters {ring_len} and {ring_head} out of range for a ring of {ring}"
            ));
        }
        // A learning stream's ring holds its last events, up to its capacity.
        let held = if self.learning { seen.min(ring) } else { 0 };
        if ring_len != held {
            return Err(format!(
                "the ring holds {ring_len} events but the stream has seen {seen} (a ring of {ring}{})",
                if self.learning { "" } else { ", learning off" }
            ));
        }
        Ok(())
    }
    /// The run of consecutive events far outside the running statistics,
    /// then each column's mean and standard deviation when it began (empty
    /// without a running normaliser).
    fn far_run(&self) -> std::ops::Range<usize> {
        self.region(Region::FarRun)
    }
    /// Each input's running scale of one-step changes, in its standard
    /// deviations: what bounds the changes the stacked experts see.
    fn change_scales(&self) -> std::ops::Range<usize> {
        self.region(Region::ChangeScales)
    }
    /// The increment moments behind the stream's own linear weights (see [`super::moments`]).
    fn moments_range(&self) -> std::ops::Range<usize> {
        self.region(Region::Moments)
    }
    /// Elements of a stream's buffer.
    pub fn len(&self) -> usize {
        self.starts[REGIONS] as usize
    }
    /// True for an empty layout (never: there is always a state).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One stream's state: everything but (shared) weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Stream<S> {
    /// `[live state | entering state | ring | pending forecasts | last raw targets]`; see [`StateLayout`].
    pub buf: Box<[S]>,
    /// Scaling statistics.
    pub norm: Normalizer,
    /// Events consumed since creation or the last reset.
    pub seen: u64,
    /// Events in the ring.
    pub ring_len: u32,
    /// Ring slot of the oldest event.
    pub ring_head: u32,
    /// Events since the last update.
    pub since_update: u32,
    /// This stream's own weights (per-stream scope only).
    pub model: Option<Box<Model<S>>>,
    /// Newest event time seen, epoch ms, from the caller's [`Clock`] (drives idle eviction).
    pub last_ts_ms: i64,
    /// The caller's [`Clock::generation`] when this stream last changed (drives delta checkpoints).
    pub touched: u64,
}

/// What the caller tells the learner about the next events: their time and
/// the checkpoint generation they belong to. Stamped on each stream an event
/// changes; it never affects a forecast.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    /// Event time, epoch ms.
    pub ts_ms: i64,
    /// Checkpoint generation.
    pub generation: u64,
}

/// Errors of one event's scoring, in original units.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Errors {
    /// Sum of squared errors of the forecast components that `x_t` completed.
    pub sq: f64,
    /// Sum of absolute errors of the same components.
    pub abs: f64,
    /// How many components were scored.
    pub n: usize,
    /// Squared error of the one-step forecast only.
    pub step1_sq: f64,
    /// Absolute error of the one-step forecast only.
    pub step1_abs: f64,
    /// Squared error of the naive (last value) one-step forecast.
    pub naive_sq: f64,
    /// Absolute error of the naive one-step forecast.
    pub naive_abs: f64,
    /// Targets in the one-step figures (0 when there was no earlier event).
    pub step1_n: usize,
}

/// What one event produced.
#[derive(Debug, PartialEq)]
pub struct Observation<'a, S> {
    /// Forecast of the next `horizon` steps, row-major `horizon × targets`, original units.
    pub forecast: &'a [S],
    /// Updates applied to the weights that made the forecast.
    pub model_version: u64,
    /// Loss of this event's TBPTT step, when one ran.
    pub loss: Option<f64>,
    /// Errors of earlier forecasts scored against this event.
    pub errors: Errors,
    /// The non-finite guard fired: the update was skipped and the stream reset.
    pub reset: bool,
    /// Lower bounds of the calibrated intervals, `levels × horizon × targets`
    /// (level-major, ascending levels; empty without intervals), original units.
    pub lower: &'a [S],
    /// Upper bounds, shaped like `lower`.
    pub upper: &'a [S],
    /// How anomalous this event is against its one-step interval, in [0, 1]
    /// (the highest over targets); `None` without intervals or before the
    /// stream's calibration started.
    pub anomaly: Option<f64>,
}

/// Counters a forecaster keeps across all its streams.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StreamStats {
    /// Events observed (good ones).
    pub events: u64,
    /// TBPTT updates applied.
    pub updates: u64,
    /// Events, losses or gradients that were not finite (each skipped and reset a stream).
    pub nonfinite: u64,
    /// Updates whose gradients were clipped.
    pub clipped: u64,
    /// Updates undone because a new weight or moment was not finite.
    pub rollbacks: u64,
    /// Streams restarted after a level shift (see [`LEVEL_SHIFT_RUN`]).
    pub level_shifts: u64,
}

/// Deviations beyond which an event is far outside a running normaliser's
/// statistics, measured against the statistics as they were when the run of
/// far events began. Running statistics absorb a shift of up to about a
/// hundred deviations well enough (one-step MSE 0.58 and 0.75 of naive's
/// after 10 and 100, on white noise, where 0.5 is the best possible; ETTh2's
/// LULL has one of 40), and a restart costs a stream with many columns more
/// than such a shift does (ETTh2 under running statistics, restarting past 10
/// deviations: MSE 3% worse at H = 1, 6% at H = 24). Past a hundred they do
/// not (15 times naive's after 1,000, 1,900 times after 10⁴).
pub const LEVEL_SHIFT_BOUND: f64 = 100.0;

/// Consecutive events far outside a running normaliser's statistics (see
/// [`LEVEL_SHIFT_BOUND`]) after which its stream restarts them (and its
/// window, history and recurrent state; weights, stacking and calibration
/// stay). Running statistics never forget: after a level shift of a thousand
/// deviations the stream's scale stays near half the shift, its own noise
/// shrinks to nothing in those units and every expert's errors come back
/// multiplied. By Chebyshev's inequality an event lies beyond 100 deviations
/// with probability at most 10⁻⁴ whatever the distribution, so noise
/// independent from event to event restarts a stream with probability at
/// most 10⁻²⁰ per event; single spikes never do.
pub const LEVEL_SHIFT_RUN: u32 = 5;

/// Events a running normaliser must have folded in before a run of far
/// events counts: a deviation estimated from a handful of events says
/// little, and a stream that young is still learning its scale anyway.
pub const LEVEL_SHIFT_WARMUP: u64 = 100;

/// The most weights a learner holds (with Adam's two moments, 1.2 GB in `f32`).
const MAX_PARAMETERS: f64 = 1e8;
/// The most values in one stream's state or one TBPTT window (64 MiB in `f32`).
const MAX_STREAM_ELEMENTS: f64 = 16_777_216.0;
/// The most features of the linear expert (its covariance is their square, in `f64`).
const MAX_LINEAR_FEATURES: f64 = 4096.0;

/// The online learner for a set of streams (one per partition in the pipeline).
#[derive(Clone, Debug)]
pub struct Forecaster<S> {
    cfg: ModelConfig,
    layout: ParamLayout,
    sl: StateLayout,
    target_idx: Vec<usize>,
    shared: Model<S>,
    /// foldhash: quick on short keys, seeded per process (stream ids come from outside).
    streams: foldhash::HashMap<Box<str>, Stream<S>>,
    stats: StreamStats,
    clock: Clock,
    work: Work<S>,
    /// The intervals' levels and step settings (`None` without intervals).
    cal: Option<Calibration>,
}

/// Scratch reused by every event (never per stream).
#[derive(Clone, Debug)]
struct Work<S> {
    tape: Tape<S>,
    grads: Params<S>,
    scratch: StepScratch<S>,
    z: Vec<S>,
    raw: Vec<f64>,
    xs: Vec<S>,
    y: Vec<S>,
    target: Vec<S>,
    dys: Vec<S>,
    d_init: Vec<S>,
    out: Vec<S>,
    /// Lag features of the linear expert.
    phi: Vec<f64>,
    /// The linear expert's forecast changes, or its training targets.
    lin: Vec<f64>,
    /// The intervals' lower and upper bounds of the last forecast.
    lo: Vec<S>,
    hi: Vec<S>,
    /// Each forecast component's interval widths, bound by bound (see
    /// [`Calibration::widths`]), as [`calibrate`] leaves them for [`intervals_shaped`].
    widths: Vec<f64>,
    /// Where an update writes the new weights before they replace the old.
    spare: Spare<S>,
    /// Each input's bound on a change over `s` steps (`s ≤ history`) that the
    /// stacked experts see, this event, at `input · (history + 1) + s` (see
    /// [`change_bound`]).
    bounds: Vec<f64>,
    /// The system a one-input stream's own linear weights are solved from.
    moments: moments::Scratch,
}

impl<S: Scalar> Forecaster<S> {
    /// A forecaster with freshly initialised weights (from `cfg.seed`).
    pub fn new(cfg: ModelConfig) -> Result<Self, String> {
        cfg.validate()?;
        let dims = cfg.dims();
        let layout = ParamLayout::new(dims);
        let mut rng = Rng::new(cfg.seed);
        let params = Params::init(&layout, &mut rng);
        let sl = StateLayout::new(&cfg);
        let features = cfg.linear.features(cfg.inputs, cfg.horizon);
        let shared = Model {
            optimizer: Optimizer::new(cfg.optimizer, &layout),
            params,
            updates: 0,
            linear: sl.stacked().then(|| {
                Rls::new(
                    features,
                    dims.outputs,
                    cfg.linear.forgetting,
                    cfg.linear.ridge,
                )
            }),
        };
        let work = Work {
            tape: Tape::new(dims, cfg.tbptt),
            grads: Params::zeros(&layout),
            scratch: StepScratch::new(&dims),
            z: vec![S::zero(); cfg.inputs],
            raw: vec![0.0; cfg.inputs],
            xs: vec![S::zero(); cfg.tbptt * cfg.inputs],
            y: vec![S::zero(); dims.outputs],
            target: vec![S::zero(); dims.outputs],
            dys: vec![S::zero(); cfg.tbptt * dims.outputs],
            d_init: vec![S::zero(); dims.state_len()],
            out: vec![S::zero(); dims.outputs],
            phi: vec![0.0; features],
            lin: vec![0.0; dims.outputs],
            spare: Spare::new(cfg.optimizer, &layout),
            lo: vec![S::zero(); cfg.intervals.len() * dims.outputs],
            hi: vec![S::zero(); cfg.intervals.len() * dims.outputs],
            widths: vec![0.0; 2 * cfg.intervals.len() * dims.outputs],
            bounds: vec![0.0; cfg.inputs * (sl.history + 1)],
            moments: moments::Scratch::new(
                if sl.moments > 0 { sl.lags } else { 0 },
                if sl.moments > 0 { cfg.horizon } else { 0 },
                cfg.linear.forgetting,
            ),
        };
        Ok(Forecaster {
            cal: cfg.calibration()?,
            target_idx: cfg.target_indices(),
            cfg,
            layout,
            sl,
            shared,
            streams: foldhash::HashMap::default(),
            stats: StreamStats::default(),
            clock: Clock::default(),
            work,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    /// Where each parameter lives.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }
    /// Offsets inside each stream's buffer.
    pub fn state_layout(&self) -> &StateLayout {
        &self.sl
    }
    /// The shared model (in per-stream scope: the initial weights every new stream copies).
    pub fn shared(&self) -> &Model<S> {
        &self.shared
    }
    /// Mutable shared model, e.g. to load pretrained weights.
    pub fn shared_mut(&mut self) -> &mut Model<S> {
        &mut self.shared
    }
    /// Counters over all streams.
    pub fn stats(&self) -> StreamStats {
        self.stats
    }
    /// Sets the time and generation stamped on the streams the next events change.
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }
    /// Streams currently held.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }
    /// One stream's state.
    pub fn stream(&self, key: &str) -> Option<&Stream<S>> {
        self.streams.get(key)
    }
    /// Every stream, in no particular order.
    pub fn streams(&self) -> impl Iterator<Item = (&str, &Stream<S>)> {
        self.streams.iter().map(|(k, v)| (&**k, v))
    }
    /// Inserts (or replaces) a stream's state, e.g. when restoring a checkpoint.
    pub fn insert_stream(&mut self, key: &str, stream: Stream<S>) {
        self.streams.insert(key.into(), stream);
    }
    /// Inserts (or replaces) a stream's state under an already boxed key.
    pub fn insert_stream_boxed(&mut self, key: Box<str>, stream: Stream<S>) {
        self.streams.insert(key, stream);
    }
    /// Makes room for `additional` more streams (restoring many at once).
    pub fn reserve_streams(&mut self, additional: usize) {
        self.streams.reserve(additional);
    }
    /// Drops a stream's state; returns it.
    pub fn remove_stream(&mut self, key: &str) -> Option<Stream<S>> {
        self.streams.remove(key)
    }
    /// Drops every stream last seen before `ts_ms` (event time); returns how many.
    pub fn drop_seen_before(&mut self, ts_ms: i64) -> usize {
        let before = self.streams.len();
        self.streams.retain(|_, s| s.last_ts_ms >= ts_ms);
        before - self.streams.len()
    }

    /// Fixes a stream's scaling statistics (creating the stream if needed).
    pub fn set_normalizer(&mut self, key: &str, norm: Normalizer) {
        let fresh = self.new_stream();
        self.streams.entry(key.into()).or_insert(fresh).norm = norm;
    }

    /// A new, empty stream state.
    pub fn new_stream(&self) -> Stream<S> {
        let mut buf = vec![S::zero(); self.sl.len()].into_boxed_slice();
        let b = &mut buf[..];
        init_stack(b, &self.sl, &self.cfg.stack);
        if self.sl.own_linear > 0
            && let Some(linear) = &self.shared.linear
        {
            // A new stream starts from what the partition's streams learned together.
            for (w, &p) in b[self.sl.own_linear_range()].iter_mut().zip(&linear.weight) {
                *w = S::of(p);
            }
        }
        Stream {
            buf,
            norm: Normalizer::new(self.cfg.normalize, self.cfg.inputs),
            seen: 0,
            ring_len: 0,
            ring_head: 0,
            since_update: 0,
            last_ts_ms: self.clock.ts_ms,
            touched: self.clock.generation,
            model: match self.cfg.weight_scope {
                WeightScope::Shared => None,
                WeightScope::PerStream => Some(Box::new(self.shared.clone())),
            },
        }
    }

    /// The interval levels of every forecast, ascending (empty without intervals).
    pub fn interval_levels(&self) -> &[f64] {
        self.cal.as_ref().map_or(&[], |c| c.levels())
    }

    /// Approximate bytes held per stream: the state struct, its buffers and the map entry.
    pub fn state_bytes_per_stream(&self) -> usize {
        let n = self.streams.len().max(1);
        let total: usize = self
            .streams
            .iter()
            .map(|(k, s)| {
                let model = s.model.as_ref().map_or(0, |m| {
                    std::mem::size_of::<Model<S>>()
                        + (m.params.data.len()
                            + m.optimizer.m.data.len()
                            + m.optimizer.v.data.len())
                            * S::BYTES
                        + m.linear.as_ref().map_or(0, |l| {
                            std::mem::size_of::<Rls>() + (l.weight.len() + l.cov.len()) * 8
                        })
                });
                std::mem::size_of::<Box<str>>()
                    + k.len()
                    + std::mem::size_of::<Stream<S>>()
                    + 1 // the hash table's control byte
                    + s.buf.len() * S::BYTES
                    + (s.norm.mean.len() + s.norm.spread.len()) * 8
                    + model
            })
            .sum();
        total / n
    }

    /// Processes one event of stream `key`: score, learn, advance, forecast.
    ///
    /// On x86-64 CPUs with AVX2 this runs a copy of the code compiled for AVX2.
    /// The kernels fix their summation order and Rust never fuses a multiply
    /// and an add on its own, so both copies give bit-identical results
    /// (a test checks this).
    pub fn observe(&mut self, key: &str, values: &[S]) -> Result<Observation<'_, S>, LearnError> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.observe_avx2(key, values) };
        }
        self.observe_portable(key, values)
    }

    /// `observe_portable` compiled with AVX2 (everything it calls is `#[inline(always)]`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn observe_avx2(&mut self, key: &str, values: &[S]) -> Result<Observation<'_, S>, LearnError> {
        self.observe_on::<true>(key, values)
    }

    /// [`Forecaster::observe`] compiled for the baseline instruction set.
    pub fn observe_portable(
        &mut self,
        key: &str,
        values: &[S],
    ) -> Result<Observation<'_, S>, LearnError> {
        self.observe_on::<false>(key, values)
    }

    /// [`Forecaster::observe`], with `AVX2` whether it runs in the copy
    /// compiled for AVX2 (which then calls the AVX2 copies of the
    /// calibration directly).
    #[inline(always)]
    fn observe_on<const AVX2: bool>(
        &mut self,
        key: &str,
        values: &[S],
    ) -> Result<Observation<'_, S>, LearnError> {
        let sl = self.sl;
        if values.len() != sl.width {
            return Err(LearnError::Width {
                expected: sl.width,
                got: values.len(),
            });
        }
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            self.stats.nonfinite += 1;
            if let Some(s) = self.streams.get_mut(key) {
                reset(s, &sl);
                s.touched = self.clock.generation;
            }
            return Err(LearnError::NonFinite {
                index,
                value: values[index].f64(),
            });
        }
        if !self.streams.contains_key(key) {
            let fresh = self.new_stream();
            self.streams.insert(key.into(), fresh);
        }
        let Forecaster {
            cfg,
            layout,
            target_idx,
            shared,
            streams,
            stats,
            clock,
            work,
            cal,
            ..
        } = self;
        let s = streams.get_mut(key).expect("inserted above");
        s.touched = clock.generation;
        s.last_ts_ms = s.last_ts_ms.max(clock.ts_ms);
        stats.events += 1;

        // Scale.
        for (r, &v) in work.raw.iter_mut().zip(values) {
            *r = v.f64();
        }
        if sl.shift_watch && level_shift(s, &sl, &work.raw) {
            stats.level_shifts += 1;
            reset(s, &sl);
            s.norm = Normalizer::new(cfg.normalize, cfg.inputs);
        }
        s.norm.observe(&work.raw, cfg.normalize_events);
        if !s.norm.is_finite() {
            s.norm = Normalizer::new(cfg.normalize, cfg.inputs);
        }
        for (k, z) in work.z.iter_mut().enumerate() {
            *z = S::of(s.norm.scale(k, work.raw[k]));
        }

        // 1. Score earlier forecasts against this event (and calibrate their
        // intervals), then learn: the calibration comes before an update
        // that may reset the stream, so the event is scored against the
        // state it met.
        let errors = score(s, &sl, target_idx, &work.raw);
        let anomaly = match cal {
            Some(cal) => calibrate::<S, AVX2>(s, &sl, target_idx, &work.raw, cal, &mut work.widths),
            None => None,
        };
        // A per-stream model is taken out while the stream's buffers are borrowed.
        let mut own = s.model.take();
        let model: &mut Model<S> = match own.as_deref_mut() {
            Some(m) => m,
            None => shared,
        };
        let mut loss = None;
        let mut trained = false;
        let mut was_reset = false;
        if sl.learning && s.seen >= sl.horizon as u64 {
            s.since_update += 1;
            if s.since_update as usize >= cfg.update_every {
                s.since_update = 0;
                match train(cfg, layout, &sl, target_idx, model, s, work) {
                    Ok((l, clip)) => {
                        loss = Some(l);
                        trained = true;
                        stats.updates += 1;
                        if clip.coef < 1.0 {
                            stats.clipped += 1;
                        }
                    }
                    Err(Skip::NonFinite) => {
                        stats.nonfinite += 1;
                        reset(s, &sl);
                        was_reset = true;
                    }
                    Err(Skip::RolledBack) => stats.rollbacks += 1,
                }
            }
        }

        // 2. Advance: the ring takes z_t (the oldest input leaves and moves the entering state on).
        let buf = &mut s.buf[..];
        if sl.learning {
            let d = sl.width;
            if s.ring_len as usize == sl.ring {
                let head = s.ring_head as usize;
                let oldest = sl.ring_at(head, sl.ring, 0);
                let (front, rest) = buf.split_at_mut(sl.entering().end);
                let entering = &mut front[sl.entering()];
                let oldest = oldest - sl.entering().end;
                if trained && !work.tape.is_empty() {
                    // The TBPTT forward pass already stepped the entering state over the oldest input.
                    entering.copy_from_slice(work.tape.state(1));
                } else {
                    step(
                        layout,
                        &model.params,
                        &rest[oldest..oldest + d],
                        entering,
                        &mut work.scratch,
                    );
                }
                if !sl.ring_in_history {
                    // (In the history, the stacking step shifts z_t in.)
                    rest[oldest..oldest + d].copy_from_slice(&work.z);
                    s.ring_head = ((head + 1) % sl.ring) as u32;
                }
            } else if sl.ring_in_history {
                s.ring_len += 1;
            } else {
                let slot = (s.ring_head as usize + s.ring_len as usize) % sl.ring;
                let ring = &mut buf[sl.ring_range()];
                ring[slot * d..(slot + 1) * d].copy_from_slice(&work.z);
                s.ring_len += 1;
            }
        }
        step(
            layout,
            &model.params,
            &work.z,
            &mut buf[sl.live()],
            &mut work.scratch,
        );

        // 3. Forecast, in original units.
        forecast(layout, &model.params, &buf[sl.live()], &mut work.out);
        let nt = sl.targets;
        if sl.stacked() {
            if cfg.predict == Predict::Level {
                // The head's levels as changes from the last value, as the stack takes them.
                for h in 0..sl.horizon {
                    for (j, &k) in target_idx.iter().enumerate() {
                        work.out[h * nt + j] -= work.z[k];
                    }
                }
            }
            let linear = model.linear.as_mut().expect("stacking has a linear expert");
            stack_step(cfg, &sl, target_idx, linear, s.seen, buf, work);
        }
        let delta = sl.stacked() || cfg.predict == Predict::Delta;
        for h in 0..sl.horizon {
            for (j, &k) in target_idx.iter().enumerate() {
                let mut y = work.out[h * nt + j].f64();
                if delta {
                    y += work.z[k].f64();
                }
                work.out[h * nt + j] = S::of(s.norm.unscale(k, y));
            }
        }
        let slot = (s.seen % sl.horizon as u64) as usize * sl.forecast_len();
        if let Some(cal) = cal {
            intervals(cal, buf, slot, &sl, s.seen, work);
        }
        buf[sl.pending()][slot..slot + sl.forecast_len()].copy_from_slice(&work.out);
        for (j, &k) in target_idx.iter().enumerate() {
            buf[sl.last_raw()][j] = values[k];
        }
        s.seen += 1;
        let model_version = model.updates;
        s.model = own;
        Ok(Observation {
            forecast: &work.out,
            model_version,
            loss,
            errors,
            reset: was_reset,
            lower: &work.lo,
            upper: &work.hi,
            anomaly,
        })
    }
}

/// Counts the event `raw` into the stream's run of events far outside its
/// running statistics (any column beyond [`LEVEL_SHIFT_BOUND`] deviations of
/// the statistics as they were when the run began, kept beside the count);
/// true once the run reaches [`LEVEL_SHIFT_RUN`] (the run starts over).
#[inline(always)]
fn level_shift<S: Scalar>(s: &mut Stream<S>, sl: &StateLayout, raw: &[f64]) -> bool {
    let (at, d) = (sl.far_run().start, sl.width);
    if s.norm.phase != NormPhase::Running || s.norm.count < LEVEL_SHIFT_WARMUP {
        s.buf[at] = S::zero();
        return false;
    }
    let run = s.buf[at].f64() as u32;
    let anchor = |s: &Stream<S>, k: usize| {
        if run == 0 {
            (s.norm.mean[k], s.norm.std(k))
        } else {
            (s.buf[at + 1 + k].f64(), s.buf[at + 1 + d + k].f64())
        }
    };
    let far = raw.iter().enumerate().any(|(k, &x)| {
        let (mean, std) = anchor(s, k);
        (x - mean).abs() > LEVEL_SHIFT_BOUND * std
    });
    if !far {
        s.buf[at] = S::zero();
        return false;
    }
    if run == 0 {
        for k in 0..d {
            s.buf[at + 1 + k] = S::of(s.norm.mean[k]);
            s.buf[at + 1 + d + k] = S::of(s.norm.std(k));
        }
    }
    let shifted = run + 1 >= LEVEL_SHIFT_RUN;
    s.buf[at] = S::of(if shifted { 0.0 } else { f64::from(run + 1) });
    shifted
}

/// Clears a stream's recurrent state, window and pending forecasts (the normaliser stays).
fn reset<S: Scalar>(s: &mut Stream<S>, sl: &StateLayout) {
    // The stacking weights are what the stream learned about its experts: they stay.
    let keep = sl.stack_cells().start;
    s.buf[..keep].fill(S::zero());
    // The increment sums describe the series the history held.
    s.buf[sl.moments_range()].fill(S::zero());
    s.seen = 0;
    s.ring_len = 0;
    s.ring_head = 0;
    s.since_update = 0;
    if !s.norm.is_finite() || s.norm.phase == NormPhase::Off {
        s.norm = Normalizer::new(
            if s.norm.phase == NormPhase::Off {
                Normalize::None
            } else {
                Normalize::Running
            },
            sl.width,
        );
    }
}

/// Sets every stacking cell of a stream buffer to its prior.
fn init_stack<S: Scalar>(buf: &mut [S], sl: &StateLayout, cfg: &StackConfig) {
    for cell in buf[sl.stack_cells()].chunks_exact_mut(stack::CELL) {
        stack::init(cell, cfg.ridge);
    }
}

/// How a stream's own linear weights (shared weights, stacking) learn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OwnFit {
    /// RLS on the stream's observations with the covariance pooled over
    /// every stream ([`Rls::update_own`]): several inputs, or running statistics.
    Pooled,
    /// As `Pooled`, keeping the increment sums: every observation of the
    /// pooled fit is the stream's own, so that fit is its own RLS exactly
    /// (the sums would count windows from before the stream began, see
    /// [`moments`]), until another stream's observations reach it.
    PooledKeepingSums,
    /// Solved from the stream's increment sums ([`moments`]): one input,
    /// no running statistics, a pooled fit that other streams have taught too.
    Sums,
}

/// The linear expert and the stacking weights for one event of a stream:
/// learn from the forecasts this event completes, then turn the recurrent
/// head's changes in `work.out` into the stacked changes.
///
/// Called after the event's scaled values `work.z` are known, with `seen` the
/// event's index in the stream. The history is a shift register of the newest
/// `history` rows, oldest first: the row `back` events ago is at
/// `history - 1 - back`, so every feature vector is one contiguous run.
#[inline(always)]
fn stack_step<S: Scalar>(
    cfg: &ModelConfig,
    sl: &StateLayout,
    target_idx: &[usize],
    linear: &mut Rls,
    seen: u64,
    buf: &mut [S],
    work: &mut Work<S>,
) {
    let (d, nt, hz, lags, rows) = (sl.width, sl.targets, sl.horizon, sl.lags, sl.history);
    let hist = sl.history_range();
    let scales = sl.change_scales();
    for k in 0..d {
        let mut scale = buf[scales.start + k].f64();
        if seen > 0 {
            let last = buf[hist.start + (rows - 1) * d + k].f64();
            scale = next_change_scale(scale, (work.z[k].f64() - last).abs());
            buf[scales.start + k] = S::of(scale);
        }
        let row = &mut work.bounds[k * (rows + 1)..(k + 1) * (rows + 1)];
        if change_bound(scale, rows) == CHANGE_BOUND {
            // Within its statistics at every distance (the usual case).
            row.fill(CHANGE_BOUND);
        } else {
            for (steps, b) in row.iter_mut().enumerate() {
                *b = change_bound(scale, steps);
            }
        }
    }
    // A change of input `k` over `steps` steps, clipped to its bound.
    let bound = |v: f64, k: usize, steps: usize, w: &Work<S>| {
        let b = w.bounds[k * (rows + 1) + steps];
        v.clamp(-b, b)
    };
    {
        // A short shift: a plain loop beats a call to memmove here.
        let h = &mut buf[hist.clone()];
        for i in 0..(rows - 1) * d {
            h[i] = h[i + d];
        }
        h[(rows - 1) * d..].copy_from_slice(&work.z);
    }
    let at = |back: usize, k: usize| hist.start + (rows - 1 - back) * d + k;

    // The linear expert learns from the forecast made `hz` events ago, once
    // that forecast had a full set of lags.
    let own_updates = seen.saturating_sub((hz + lags - 1) as u64);
    let own_fit = match sl.moments > 0 {
        false => OwnFit::Pooled,
        // Every update of the pooled fit so far was this stream's.
        true if linear.updates == own_updates => OwnFit::PooledKeepingSums,
        true => OwnFit::Sums,
    };
    if sl.learning && seen >= (hz + lags - 1) as u64 {
        fill_lags(&buf[hist.clone()], sl, hz, work);
        for h in 0..hz {
            for (j, &k) in target_idx.iter().enumerate() {
                let change = bound(
                    buf[at(hz - 1 - h, k)].f64() - buf[at(hz, k)].f64(),
                    k,
                    h + 1,
                    work,
                );
                work.lin[h * nt + j] = change;
            }
        }
        if let Some(quad) = linear.prepare(&work.phi, &work.lin) {
            if sl.own_linear > 0 && own_fit != OwnFit::Sums {
                // The stream's own weights, from its own earlier updates.
                let scale = linear.stream_gain(own_updates);
                let own = &mut buf[sl.own_linear_range()];
                linear.update_own(own, &work.phi, &work.lin, quad, scale);
            }
            linear.apply(&work.phi, &work.lin, quad);
        }
    }
    if own_fit != OwnFit::Pooled && sl.learning {
        // A one-input stream's own weights: the least-squares fit of its own
        // windows, from its increment sums (see `moments`).
        let (front, back) = buf.split_at_mut(sl.moments_range().start);
        let mom = &mut back[..sl.moments];
        let (bound, lambda) = (&work.bounds[..=rows], cfg.linear.forgetting);
        moments::observe(mom, &front[hist.clone()], seen, bound, lambda);
        // `seen + 1` values folded in so far.
        let count = seen + 1;
        if own_fit == OwnFit::Sums
            && count >= lags as u64
            && count.is_multiple_of(moments::SOLVE_EVERY)
        {
            // The own weights lie after the history.
            let own = sl.own_linear_range();
            let (rows, weights) = front.split_at_mut(own.start);
            moments::solve(
                mom,
                &rows[hist.clone()],
                seen,
                bound,
                lambda,
                cfg.linear.ridge,
                &mut weights[..own.len()],
                &mut work.moments,
            );
        }
    }
    // Each step's stacking cell learns from the forecast whose step-h component this event completes.
    let fl = sl.forecast_len();
    let e = sl.experts;
    let (pending, cells) = (sl.expert_pending().start, sl.stack_cells().start);
    if sl.learning {
        for h in 0..hz.min(seen as usize) {
            let made = seen - 1 - h as u64;
            let slot = (made % hz as u64) as usize;
            for (j, &k) in target_idx.iter().enumerate() {
                let c = h * nt + j;
                let y = bound(
                    buf[at(0, k)].f64() - buf[at(h + 1, k)].f64(),
                    k,
                    h + 1,
                    work,
                );
                let ex = pending + (slot * fl + c) * e;
                let mut experts = [S::zero(); EXPERTS];
                experts.copy_from_slice(&buf[ex..ex + e]);
                let cell = cells + c * stack::CELL;
                stack::update(&mut buf[cell..cell + stack::CELL], &experts, y, &cfg.stack);
            }
        }
    }
    // This event's forecast: the linear expert's changes (naive until the
    // stream has `lags` rows), stacked with the recurrent head's.
    if seen + 1 >= lags as u64 {
        fill_lags(&buf[hist], sl, 0, work);
        if sl.own_linear > 0 {
            super::linear::predict_with(&buf[sl.own_linear_range()], &work.phi, &mut work.lin);
        } else {
            linear.predict(&work.phi, &mut work.lin);
        }
    } else {
        work.lin.fill(0.0);
    }
    let slot = if hz == 1 {
        0
    } else {
        (seen % hz as u64) as usize
    };
    for c in 0..fl {
        let (k, steps) = (target_idx[c % nt], c / nt + 1);
        let experts = [
            S::of(bound(work.lin[c], k, steps, work)),
            S::of(bound(work.out[c].f64(), k, steps, work)),
        ];
        if sl.learning {
            // Kept for the cell's update once the target arrives.
            let ex = pending + (slot * fl + c) * e;
            buf[ex..ex + e].copy_from_slice(&experts);
        }
        let cell = cells + c * stack::CELL;
        work.out[c] = S::of(stack::predict(&buf[cell..cell + stack::CELL], &experts));
    }
}

/// The linear expert's features of the forecast made `back` events ago, as
/// [`super::linear::lag_features`] orders them (oldest lag first), into `work.phi`.
#[inline(always)]
fn fill_lags<S: Scalar>(hist: &[S], sl: &StateLayout, back: usize, work: &mut Work<S>) {
    let (d, lags, stride) = (sl.width, sl.lags, sl.history + 1);
    let (phi, bounds) = (&mut work.phi, &work.bounds);
    let end = (sl.history - back) * d;
    let last = &hist[end - d..end];
    let run = &hist[end - lags * d..end - d];
    // Oldest lag first: the row `i` into the run is `lags - 1 - i` steps back.
    if d == 1 {
        let last = last[0].f64();
        for (i, (p, v)) in phi.iter_mut().zip(run).enumerate() {
            let b = bounds[lags - 1 - i];
            *p = (v.f64() - last).clamp(-b, b);
        }
    } else {
        for (i, (p, row)) in phi.chunks_exact_mut(d).zip(run.chunks_exact(d)).enumerate() {
            for k in 0..d {
                let b = bounds[k * stride + lags - 1 - i];
                p[k] = (row[k].f64() - last[k].f64()).clamp(-b, b);
            }
        }
    }
    phi[(lags - 1) * d] = 1.0;
}

/// Scores the pending forecasts' components for this event.
#[inline(always)]
fn score<S: Scalar>(s: &Stream<S>, sl: &StateLayout, target_idx: &[usize], raw: &[f64]) -> Errors {
    let mut e = Errors::default();
    let buf = &s.buf[..];
    let pending = &buf[sl.pending()];
    let fl = sl.forecast_len();
    let nt = sl.targets;
    let back = (sl.horizon as u64).min(s.seen);
    for k in 1..=back {
        let made = s.seen - k;
        let slot = (made % sl.horizon as u64) as usize * fl;
        let comp = &pending[slot + (k as usize - 1) * nt..slot + k as usize * nt];
        for (j, &t) in target_idx.iter().enumerate() {
            let err = comp[j].f64() - raw[t];
            e.sq += err * err;
            e.abs += err.abs();
            e.n += 1;
            if k == 1 {
                e.step1_sq += err * err;
                e.step1_abs += err.abs();
                let naive = buf[sl.last_raw()][j].f64() - raw[t];
                e.naive_sq += naive * naive;
                e.naive_abs += naive.abs();
                e.step1_n += 1;
            }
        }
    }
    e
}

/// Calibrates the intervals of the pending forecasts' components that this
/// event completes; returns the event's anomaly score against its one-step
/// intervals (scored before they move), the highest over targets. Leaves
/// in `widths` the widths each calibrated component issues next (see
/// [`intervals`]). Kept out of line: inlined into `observe` it slowed the
/// forecast path by more than its own cost (measured with `recur bench model`).
/// `AVX2` (set by [`Forecaster::observe`] on CPUs with AVX2) runs a copy
/// compiled for AVX2, as the forecast path does (the same operations in the
/// same order, so the same bits).
#[inline(always)]
fn calibrate<S: Scalar, const AVX2: bool>(
    s: &mut Stream<S>,
    sl: &StateLayout,
    target_idx: &[usize],
    raw: &[f64],
    cal: &Calibration,
    widths: &mut [f64],
) -> Option<f64> {
    let default = CalShape::of(sl, cal) == CalShape::DEFAULT;
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        // SAFETY: `AVX2` is set only on the path `Forecaster::observe` takes
        // once it has checked that the CPU supports AVX2.
        return unsafe {
            if default {
                calibrate_avx2::<S, true>(s, sl, target_idx, raw, cal, widths)
            } else {
                calibrate_avx2::<S, false>(s, sl, target_idx, raw, cal, widths)
            }
        };
    }
    if default {
        calibrate_baseline::<S, true>(s, sl, target_idx, raw, cal, widths)
    } else {
        calibrate_baseline::<S, false>(s, sl, target_idx, raw, cal, widths)
    }
}

/// [`calibrate`] compiled for the baseline instruction set.
#[inline(never)]
fn calibrate_baseline<S: Scalar, const DEFAULT: bool>(
    s: &mut Stream<S>,
    sl: &StateLayout,
    target_idx: &[usize],
    raw: &[f64],
    cal: &Calibration,
    widths: &mut [f64],
) -> Option<f64> {
    calibrate_portable::<S, DEFAULT>(s, sl, target_idx, raw, cal, widths)
}

/// [`calibrate`] compiled with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline(never)]
fn calibrate_avx2<S: Scalar, const DEFAULT: bool>(
    s: &mut Stream<S>,
    sl: &StateLayout,
    target_idx: &[usize],
    raw: &[f64],
    cal: &Calibration,
    widths: &mut [f64],
) -> Option<f64> {
    calibrate_portable::<S, DEFAULT>(s, sl, target_idx, raw, cal, widths)
}

/// [`calibrate`]'s body, which both copies inline. The dispatch on the
/// shape is written out here and in [`intervals`]: behind a helper that
/// took the body as a closure, LLVM merged the two calls and the copy for
/// [`CalShape::DEFAULT`] was gone (1,100 instructions an event, not 658).
/// `DEFAULT` ([`calibrate`] checks the shape) picks that copy; each copy
/// is its own function, so that the other shapes' code (the default
/// intervals at a longer horizon, any other) does not crowd its registers.
#[inline(always)]
fn calibrate_portable<S: Scalar, const DEFAULT: bool>(
    s: &mut Stream<S>,
    sl: &StateLayout,
    target_idx: &[usize],
    raw: &[f64],
    cal: &Calibration,
    widths: &mut [f64],
) -> Option<f64> {
    if DEFAULT {
        return calibrate_shaped(s, sl, target_idx, raw, cal, widths, CalShape::DEFAULT);
    }
    let shape = CalShape::of(sl, cal);
    let any_horizon = CalShape::DEFAULT.ahead(shape.horizon);
    if shape == any_horizon {
        calibrate_shaped(s, sl, target_idx, raw, cal, widths, any_horizon)
    } else {
        calibrate_shaped(s, sl, target_idx, raw, cal, widths, shape)
    }
}

/// The sizes [`calibrate`] and [`intervals`] loop over, and where the
/// calibration's regions lie in a stream's buffer. [`CalShape::DEFAULT`]
/// gets a copy of each compiled for it, with every loop over bounds,
/// levels, targets and steps ahead of a constant length (unrolled, its
/// indices checked when compiled): on the default intervals, it ran the
/// calibration in fewer instructions than the copy for any shape.
#[derive(Clone, Copy, PartialEq, Eq)]
struct CalShape {
    /// Bounds per forecast component ([`Calibration::bounds`]).
    bounds: usize,
    /// Elements of a calibration cell ([`StateLayout::calibration`]).
    cell: usize,
    /// Elements of a target's anomaly trackers ([`StateLayout::anomaly`]).
    anomaly: usize,
    /// Targets.
    targets: usize,
    /// Steps ahead.
    horizon: usize,
}

impl CalShape {
    /// The default intervals (two levels, no integrator) on one target,
    /// one step ahead ([`calibrate`] has a second copy for these at any
    /// horizon; [`intervals`] costs little per step and has none).
    const DEFAULT: CalShape = CalShape {
        bounds: 4,
        cell: conformal::cell_len(2, false),
        anomaly: conformal::anomaly_len(2),
        targets: 1,
        horizon: 1,
    };

    /// This shape with `horizon` steps ahead.
    #[inline(always)]
    const fn ahead(self, horizon: usize) -> CalShape {
        CalShape { horizon, ..self }
    }

    /// Elements of the calibration's block of a stream's buffer: its
    /// regions ([`Region::CalibrationCells`], [`Region::PendingScale`],
    /// [`Region::SeenRange`], [`Region::AnomalyCells`], which lie in that
    /// order), taken as one slice so that where each lies in it is known
    /// from the shape (constant, for [`CalShape::DEFAULT`]).
    #[inline(always)]
    const fn block(self) -> usize {
        self.tracks_at() + self.targets * self.anomaly
    }

    /// Where the pending scales start in the block (after a cell per
    /// forecast component).
    #[inline(always)]
    const fn scales_at(self) -> usize {
        self.horizon * self.targets * self.cell
    }

    /// Where the seen ranges start in the block (after the scales of each
    /// pending forecast's components).
    #[inline(always)]
    const fn range_at(self) -> usize {
        self.scales_at() + self.horizon * self.horizon * self.targets * conformal::ISSUED
    }

    /// Where the anomaly trackers start in the block (after two bounds per target).
    #[inline(always)]
    const fn tracks_at(self) -> usize {
        self.range_at() + 2 * self.targets
    }

    /// The shape of a forecaster's calibration.
    #[inline(always)]
    fn of(sl: &StateLayout, cal: &Calibration) -> CalShape {
        CalShape {
            bounds: cal.bounds(),
            cell: sl.calibration,
            anomaly: sl.anomaly,
            targets: sl.targets,
            horizon: sl.horizon,
        }
    }
}

/// [`calibrate`] with its sizes taken from `shape` (see [`CalShape`]).
#[inline(always)]
fn calibrate_shaped<S: Scalar>(
    s: &mut Stream<S>,
    sl: &StateLayout,
    target_idx: &[usize],
    raw: &[f64],
    cal: &Calibration,
    widths: &mut [f64],
    shape: CalShape,
) -> Option<f64> {
    if s.seen == 0 {
        start_ranges(&mut s.buf, sl, target_idx, raw);
        return None;
    }
    let armed = s.seen >= conformal::RANGE_WARMUP;
    let eta = Calibration::mix_rate(s.seen);
    let h = shape.horizon;
    // The pending slot of the forecast made one event ago (the one made k
    // events ago lies k − 1 slots before it, cyclically).
    let newest = if h == 1 {
        0
    } else {
        ((s.seen - 1) % h as u64) as usize
    };
    let fl = h * shape.targets;
    // The pending forecasts lie before the calibration's block.
    let (front, back) = s.buf.split_at_mut(sl.calibration_cells().start);
    let pending = &front[sl.pending()];
    let block = &mut back[..shape.block()];
    let widths = &mut widths[..fl * shape.bounds];
    let (w, aw) = (shape.cell, shape.anomaly);
    let (range, tracks) = (shape.range_at(), shape.tracks_at());
    let targets = &target_idx[..shape.targets];
    let mut anomaly: Option<f64> = None;
    // The one-step components, which the anomaly scores read.
    for (j, &t) in targets.iter().enumerate() {
        let r = raw[t] - pending[newest * fl + j].f64();
        let seen = &mut block[range + 2 * j..range + 2 * j + 2];
        let new = conformal::outside_range(seen, raw[t], false, armed);
        // Scored against the one-step trackers before they move.
        let (cell, track) = (j * w, tracks + j * aw);
        if let Some(mut a) = cal.anomaly(&block[cell..cell + w], &block[track..track + aw], r) {
            // Outside the widest interval and new to the stream's
            // range: nothing it has seen or expected comes close.
            if new && a >= cal.widest() {
                a = 1.0;
            }
            anomaly = Some(anomaly.map_or(a, |b| b.max(a)));
        }
        let m = Calibration::scale(&block[cell..cell + w]);
        cal.observe_anomaly(&mut block[track..track + aw], m, r);
        calibrate_component(block, cal, shape, newest * fl, 1, j, r, eta, widths);
    }
    // The further steps ahead, of the forecasts made earlier.
    let mut slot = newest;
    for k in 2..=(h as u64).min(s.seen) as usize {
        slot = if slot == 0 { h - 1 } else { slot - 1 };
        for (j, &t) in targets.iter().enumerate() {
            let c = (k - 1) * shape.targets + j;
            let r = raw[t] - pending[slot * fl + c].f64();
            calibrate_component(block, cal, shape, slot * fl, k, c, r, eta, widths);
        }
    }
    anomaly
}

/// A new stream's first value starts each target's range (see
/// [`conformal::outside_range`]). Out of line and cold, like the other
/// first-event paths of [`calibrate`].
#[cold]
#[inline(never)]
fn start_ranges<S: Scalar>(buf: &mut [S], sl: &StateLayout, target_idx: &[usize], raw: &[f64]) {
    let range = sl.seen_range().start;
    for (j, &t) in target_idx.iter().enumerate() {
        conformal::outside_range(&mut buf[range + 2 * j..], raw[t], true, false);
    }
}

/// Calibrates component `c` (step `k` ahead) of the forecast in the pending
/// slot starting at `slot` by its residual `r` (see [`Calibration::observe`]),
/// leaving the widths it issues next in `widths`; `block` is the stream's
/// calibration block (see [`CalShape::block`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn calibrate_component<S: Scalar>(
    block: &mut [S],
    cal: &Calibration,
    shape: CalShape,
    slot: usize,
    k: usize,
    c: usize,
    r: f64,
    eta: Option<f64>,
    widths: &mut [f64],
) {
    let (w, nb) = (shape.cell, shape.bounds);
    let at = shape.scales_at() + (slot + c) * conformal::ISSUED;
    let issued: [S; conformal::ISSUED] = std::array::from_fn(|i| block[at + i]);
    let cell = c * w;
    cal.observe(
        &mut block[cell..cell + w],
        r,
        &issued,
        k,
        eta,
        &mut widths[c * nb..(c + 1) * nb],
    );
}

/// The intervals of the forecast in `work.out` (see [`intervals_shaped`]).
/// Inlined into the forecast path (out of line, it ran in more
/// instructions than it saved there).
#[inline(always)]
fn intervals<S: Scalar>(
    cal: &Calibration,
    buf: &mut [S],
    slot: usize,
    sl: &StateLayout,
    seen: u64,
    work: &mut Work<S>,
) {
    let shape = CalShape::of(sl, cal);
    if shape == CalShape::DEFAULT {
        intervals_shaped(cal, buf, slot, sl, seen, work, CalShape::DEFAULT)
    } else {
        intervals_shaped(cal, buf, slot, sl, seen, work, shape)
    }
}

/// The intervals of the forecast in `work.out` into `work.lo` and `work.hi`,
/// and the scale each was issued in, to score it by, into the stream's
/// pending slot `slot`, with its sizes taken from `shape` (see
/// [`CalShape`]). A stream that has seen `seen` events had
/// [`calibrate`] leave the widths of its first `seen` steps ahead in
/// `work.widths`; the further steps' cells (not scored yet) give theirs
/// here.
#[inline(always)]
fn intervals_shaped<S: Scalar>(
    cal: &Calibration,
    buf: &mut [S],
    slot: usize,
    sl: &StateLayout,
    seen: u64,
    work: &mut Work<S>,
    shape: CalShape,
) {
    let (fl, w, nb) = (shape.horizon * shape.targets, shape.cell, shape.bounds);
    // One step ahead, the only slot is the first.
    let slot = if shape.horizon == 1 { 0 } else { slot };
    let start = sl.calibration_cells().start;
    let block = &mut buf[start..start + shape.block()];
    let at = shape.scales_at() + slot * conformal::ISSUED;
    let scored = (seen.min(shape.horizon as u64) as usize) * shape.targets;
    let Work {
        out,
        lo,
        hi,
        widths,
        ..
    } = work;
    let (out, widths) = (&out[..fl], &mut widths[..fl * nb]);
    let (lo, hi) = (&mut lo[..nb / 2 * fl], &mut hi[..nb / 2 * fl]);
    for c in 0..fl {
        let cell = &block[c * w..(c + 1) * w];
        let issued = Calibration::issue(cell);
        let widths = &mut widths[c * nb..(c + 1) * nb];
        if c >= scored {
            cal.widths(cell, widths);
        }
        block[at + c * conformal::ISSUED..at + (c + 1) * conformal::ISSUED]
            .copy_from_slice(&issued);
        let forecast = out[c].f64();
        for (l, pair) in widths.chunks_exact(2).enumerate() {
            let (a, b) = Calibration::around(forecast, pair[0], pair[1]);
            lo[l * fl + c] = S::of(a);
            hi[l * fl + c] = S::of(b);
        }
    }
}

/// Why a TBPTT step changed no weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    /// The loss or a gradient was not finite: the stream's state is suspect.
    NonFinite,
    /// The gradients were finite but the new weights were not: the old ones stay.
    RolledBack,
}

/// One TBPTT step on the newest complete forecasts of stream `s`; `Err` says
/// why nothing was applied.
#[inline(always)]
fn train<S: Scalar>(
    cfg: &ModelConfig,
    layout: &ParamLayout,
    sl: &StateLayout,
    target_idx: &[usize],
    model: &mut Model<S>,
    s: &Stream<S>,
    work: &mut Work<S>,
) -> Result<(f64, ClipReport), Skip> {
    let d = sl.width;
    let nt = sl.targets;
    let hz = sl.horizon;
    let o = hz * nt;
    let buf = &s.buf[..];
    let len = s.ring_len as usize;
    // Window: the oldest `n` ring entries; the newest `hz - 1` entries and z_t are targets only.
    let n = len + 1 - hz;
    let at = |j: usize| sl.ring_at(s.ring_head as usize, len, j);
    for j in 0..n {
        work.xs[j * d..(j + 1) * d].copy_from_slice(&buf[at(j)..at(j) + d]);
    }
    let xs = &work.xs[..n * d];
    work.tape
        .forward(layout, &model.params, xs, &buf[sl.entering()]);

    let first = match cfg.objective {
        Objective::Last => n - 1,
        Objective::Window => 0,
    };
    let scored = n - first;
    let count = scored * o;
    let mut loss = S::zero();
    for (row, j) in (first..n).enumerate() {
        // Targets of the forecast made after window input j: inputs j+1 ..= j+hz.
        for h in 0..hz {
            let src = j + 1 + h;
            let value: &[S] = if src < len {
                &buf[at(src)..at(src) + d]
            } else {
                &work.z
            };
            for (q, &k) in target_idx.iter().enumerate() {
                let base = if cfg.predict == Predict::Delta {
                    xs[j * d + k]
                } else {
                    S::zero()
                };
                work.target[h * nt + q] = value[k] - base;
            }
        }
        work.tape.head(layout, &model.params, j + 1, &mut work.y);
        loss += cfg.loss.accumulate(
            &work.y,
            &work.target,
            count,
            &mut work.dys[row * o..(row + 1) * o],
        );
    }
    if !loss.is_finite() {
        return Err(Skip::NonFinite);
    }
    work.grads.fill_zero();
    work.tape.backward(
        layout,
        &model.params,
        xs,
        &work.dys[..scored * o],
        &mut work.grads,
        None,
        &mut work.d_init,
    );
    let clip = if cfg.clip_norm > 0.0 {
        clip_grad_norm(&mut work.grads, cfg.clip_norm)
    } else {
        ClipReport {
            total_norm: sum_sq(work.grads.flat()).f64().sqrt(),
            coef: 1.0,
        }
    };
    // The norm is finite exactly when every gradient is (barring overflow, which also skips).
    if !clip.total_norm.is_finite() {
        return Err(Skip::NonFinite);
    }
    let update = model
        .optimizer
        .update(&mut model.params, &mut work.grads, &mut work.spare);
    if update == Update::RolledBack {
        return Err(Skip::RolledBack);
    }
    model.updates += 1;
    Ok((loss.f64(), clip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calibration_block_holds_the_layouts_regions_where_the_shape_says() {
        // (levels, K_I, horizon, inputs, targets)
        type Case = (&'static [f64], f64, usize, usize, Vec<usize>);
        let cases: [Case; 5] = [
            (&[0.8, 0.95], 0.0, 1, 1, vec![0]),
            (&[0.8, 0.95], 0.0, 24, 1, vec![0]),
            (&[0.5, 0.8, 0.9, 0.95], 0.5, 4, 1, vec![0]),
            (&[0.9], 0.0, 3, 7, vec![1, 4, 6]),
            (&[0.8, 0.9, 0.95], 0.2, 2, 3, vec![0, 1, 2]),
        ];
        for (levels, ki, horizon, inputs, targets) in cases {
            let cfg = ModelConfig {
                intervals: levels.to_vec(),
                interval_ki: ki,
                horizon,
                inputs,
                targets,
                ..ModelConfig::default()
            };
            let sl = StateLayout::new(&cfg);
            let cal = cfg.calibration().unwrap().unwrap();
            let shape = CalShape::of(&sl, &cal);
            let start = sl.calibration_cells().start;
            let case = format!("{levels:?}, K_I {ki}, H = {horizon}, {inputs} inputs");
            assert_eq!(
                start + shape.scales_at(),
                sl.pending_scale().start,
                "{case}"
            );
            assert_eq!(start + shape.range_at(), sl.seen_range().start, "{case}");
            assert_eq!(
                start + shape.tracks_at(),
                sl.anomaly_cells().start,
                "{case}"
            );
            assert_eq!(start + shape.block(), sl.anomaly_cells().end, "{case}");
        }
    }

    /// [`Calibration::observe`] scores a one-step forecast in its cell's
    /// scales as they are when it is scored, not the ones kept with the
    /// forecast: that holds only while nothing moves a one-step cell between
    /// a forecast's issue and its scoring, which this checks on every event
    /// of a stream with spikes, a value the learner refuses and a level shift.
    #[test]
    fn a_one_step_cell_has_not_moved_since_it_issued_the_forecast_it_scores() {
        let (horizon, targets) = (3, 2);
        let cfg = ModelConfig {
            horizon,
            inputs: targets,
            hidden: 8,
            ..ModelConfig::default()
        };
        let mut f = Forecaster::<f32>::new(cfg).unwrap();
        let sl = f.sl;
        let (cells, w) = (sl.calibration_cells().start, sl.calibration);
        let mut rng = crate::model::rng::Rng::new(7);
        let mut checked = 0;
        for t in 0..3_000u64 {
            let level = if t < 2_000 { 10.0 } else { 1e6 };
            let mut v = [0.0f32; 2];
            for (j, v) in v.iter_mut().enumerate() {
                let spike = if t % 97 == 0 { 50.0 } else { 0.0 };
                *v = (level + (t as f64 / 10.0 + j as f64).sin() + 0.3 * rng.normal() + spike)
                    as f32;
            }
            if t == 1_500 {
                v[1] = f32::NAN;
            }
            if let Some(s) = f.streams.get("k")
                && s.seen > 0
                && s.buf[cells].f64() != 0.0
            {
                let newest = ((s.seen - 1) % horizon as u64) as usize;
                for j in 0..targets {
                    let at = sl.pending_scale().start
                        + (newest * horizon * targets + j) * conformal::ISSUED;
                    let cell = &s.buf[cells + j * w..cells + (j + 1) * w];
                    assert_eq!(
                        &s.buf[at..at + conformal::ISSUED],
                        &Calibration::issue(cell)[..],
                        "event {t}, target {j}"
                    );
                    checked += 1;
                }
            }
            let _ = f.observe("k", &v);
        }
        assert!(checked > 5_000, "checked {checked}");
        // The refused value and the level shift each reset the stream.
        let stats = f.stats();
        assert_eq!((stats.nonfinite, stats.level_shifts), (1, 1));
    }
}
