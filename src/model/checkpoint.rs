//! Checkpoints as [safetensors](https://huggingface.co/docs/safetensors) files.
//!
//! Layout of a file: 8 bytes little-endian header length, a JSON header, then
//! the raw little-endian tensor bytes. The header's `__metadata__` carries:
//!
//! | key | value |
//! |---|---|
//! | `format` | `pt` |
//! | `recur.format` | `1` |
//! | `recur.config` | the [`ModelConfig`] as JSON |
//! | `recur.updates` | updates applied to the shared weights |
//! | `recur.optimizer_step` | the shared optimiser's step count |
//! | `recur.streams` | JSON array of stream keys, in the row order of the `streams.*` tensors |
//!
//! Tensors:
//!
//! * the shared weights under PyTorch's `state_dict` names (`rnn.weight_ih_l0`,
//!   …, `head.weight`, `head.bias`, row-major as torch stores them), so
//!   `safetensors.torch.load_file` gives a dict that loads into
//!   `nn.LSTM`/`GRU`/`RNN` (prefix `rnn.`) and `nn.Linear` (prefix `head.`);
//! * the optimiser's moments as `optimizer.exp_avg.<name>`,
//!   `optimizer.exp_avg_sq.<name>` (Adam/AdamW) or
//!   `optimizer.momentum_buffer.<name>` (SGD with momentum);
//! * per stream, one row each: `streams.state` (N × state length: live state,
//!   state entering the TBPTT ring, the ring of scaled inputs, pending
//!   forecasts, last raw targets; see `StateLayout`), `streams.norm_mean` and
//!   `streams.norm_spread` (N × inputs, F64), `streams.counters` (N × 8, I64:
//!   seen, ring_len, ring_head, since_update, norm_count, norm_phase
//!   (0 off, 1 running, 2 frozen), updates, optimizer_step);
//! * with per-stream weights also `streams.params`, `streams.exp_avg`,
//!   `streams.exp_avg_sq` (N × parameters, in recur's flat memory order).

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::Array1;
use serde_json::{Value, json};

use super::learner::{Forecaster, Model, ModelConfig, Stream};
use super::normalize::{NormPhase, Normalizer};
use super::optim::OptimizerKind;
use super::params::{ParamLayout, Params};
use super::scalar::Scalar;

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing the file failed.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes are not a valid recur safetensors checkpoint.
    #[error("malformed checkpoint: {0}")]
    Format(String),
    /// The checkpoint does not fit this forecaster.
    #[error("checkpoint does not match: {0}")]
    Mismatch(String),
}

fn bad(msg: impl Into<String>) -> CheckpointError {
    CheckpointError::Format(msg.into())
}

/// A safetensors file under construction.
#[derive(Default)]
pub struct Writer {
    header: BTreeMap<String, Value>,
    order: Vec<String>,
    data: Vec<u8>,
    metadata: BTreeMap<String, String>,
}

impl Writer {
    /// Adds a metadata string.
    pub fn meta(&mut self, key: &str, value: impl Into<String>) {
        self.metadata.insert(key.into(), value.into());
    }

    /// Adds a tensor of floats.
    pub fn tensor<S: Scalar>(
        &mut self,
        name: &str,
        shape: &[usize],
        values: impl IntoIterator<Item = S>,
    ) {
        let start = self.data.len();
        for v in values {
            S::put_le(v, &mut self.data);
        }
        self.finish(name, S::DTYPE, shape, start);
    }

    /// Adds a tensor of 64-bit integers.
    pub fn tensor_i64(
        &mut self,
        name: &str,
        shape: &[usize],
        values: impl IntoIterator<Item = i64>,
    ) {
        let start = self.data.len();
        for v in values {
            self.data.extend_from_slice(&v.to_le_bytes());
        }
        self.finish(name, "I64", shape, start);
    }

    fn finish(&mut self, name: &str, dtype: &str, shape: &[usize], start: usize) {
        let entry =
            json!({"dtype": dtype, "shape": shape, "data_offsets": [start, self.data.len()]});
        self.header.insert(name.to_string(), entry);
        self.order.push(name.to_string());
    }

    /// The file's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), json!(self.metadata));
        for (k, v) in self.header {
            header.insert(k, v);
        }
        let mut text = Value::Object(header).to_string().into_bytes();
        // Pad so the tensor data starts 8-byte aligned, as the reference writer does.
        while !(8 + text.len()).is_multiple_of(8) {
            text.push(b' ');
        }
        let mut out = Vec::with_capacity(8 + text.len() + self.data.len());
        out.extend_from_slice(&(text.len() as u64).to_le_bytes());
        out.extend_from_slice(&text);
        out.extend_from_slice(&self.data);
        out
    }
}

/// A parsed safetensors file.
pub struct Reader<'a> {
    header: serde_json::Map<String, Value>,
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Parses the header of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Result<Self, CheckpointError> {
        if bytes.len() < 8 {
            return Err(bad("shorter than the 8-byte header length"));
        }
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        let end = 8usize
            .checked_add(n)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| {
                bad(format!(
                    "header length {n} exceeds the file size {}",
                    bytes.len()
                ))
            })?;
        let header: Value = serde_json::from_slice(&bytes[8..end])
            .map_err(|e| bad(format!("header is not JSON: {e}")))?;
        let Value::Object(header) = header else {
            return Err(bad("header is not a JSON object"));
        };
        Ok(Reader {
            header,
            data: &bytes[end..],
        })
    }

    /// A metadata string.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.header.get("__metadata__")?.get(key)?.as_str()
    }

    /// A required metadata string.
    pub fn need_meta(&self, key: &str) -> Result<&str, CheckpointError> {
        self.meta(key)
            .ok_or_else(|| bad(format!("metadata `{key}` is missing")))
    }

    /// True when the file has a tensor called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.header.contains_key(name)
    }

    fn raw(&self, name: &str, dtype: &str) -> Result<(Vec<usize>, &'a [u8]), CheckpointError> {
        let e = self
            .header
            .get(name)
            .ok_or_else(|| bad(format!("tensor `{name}` is missing")))?;
        let got = e.get("dtype").and_then(Value::as_str).unwrap_or("?");
        if got != dtype {
            return Err(CheckpointError::Mismatch(format!(
                "tensor `{name}` is {got}, expected {dtype}"
            )));
        }
        let shape: Vec<usize> = e
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("tensor `{name}` has no shape")))?
            .iter()
            .map(|v| v.as_u64().map(|v| v as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| bad(format!("tensor `{name}` has a bad shape")))?;
        let offs = e
            .get("data_offsets")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 2)
            .and_then(|a| Some((a[0].as_u64()? as usize, a[1].as_u64()? as usize)))
            .ok_or_else(|| bad(format!("tensor `{name}` has bad data_offsets")))?;
        let width = if dtype == "F32" { 4 } else { 8 };
        let want = shape.iter().product::<usize>() * width;
        if offs.0 > offs.1 || offs.1 > self.data.len() || offs.1 - offs.0 != want {
            return Err(bad(format!(
                "tensor `{name}`: offsets {offs:?} do not fit shape {shape:?}"
            )));
        }
        Ok((shape, &self.data[offs.0..offs.1]))
    }

    /// A float tensor's shape and values.
    /// Refused when a value is not finite: recur never writes one, so such a
    /// file is corrupt or foreign, and loading it would poison every forecast.
    pub fn tensor<S: Scalar>(&self, name: &str) -> Result<(Vec<usize>, Vec<S>), CheckpointError> {
        let (shape, bytes) = self.raw(name, S::DTYPE)?;
        let values: Vec<S> = bytes.chunks_exact(S::BYTES).map(S::get_le).collect();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "tensor {name} holds a non-finite value at index {i}"
            )));
        }
        Ok((shape, values))
    }

    /// An `f64` tensor's values (whatever the model's element type).
    pub fn tensor_f64(&self, name: &str) -> Result<(Vec<usize>, Vec<f64>), CheckpointError> {
        self.tensor::<f64>(name)
    }

    /// An I64 tensor's shape and values.
    pub fn tensor_i64(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>), CheckpointError> {
        let (shape, bytes) = self.raw(name, "I64")?;
        Ok((
            shape,
            bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        ))
    }
}

fn moment_names(kind: OptimizerKind, momentum: f64) -> (&'static str, Option<&'static str>) {
    match kind {
        OptimizerKind::Sgd if momentum != 0.0 => ("momentum_buffer", None),
        OptimizerKind::Sgd => ("", None),
        _ => ("exp_avg", Some("exp_avg_sq")),
    }
}

const COUNTERS: usize = 8;

fn put_params<S: Scalar>(w: &mut Writer, layout: &ParamLayout, prefix: &str, p: &Params<S>) {
    for spec in &layout.tensors {
        w.tensor(
            &format!("{prefix}{}", spec.name),
            &spec.shape,
            p.tensor_values(spec),
        );
    }
}

fn get_params<S: Scalar>(
    r: &Reader<'_>,
    layout: &ParamLayout,
    prefix: &str,
    p: &mut Params<S>,
) -> Result<(), CheckpointError> {
    for spec in &layout.tensors {
        let name = format!("{prefix}{}", spec.name);
        let (shape, values) = r.tensor::<S>(&name)?;
        if shape != spec.shape {
            return Err(CheckpointError::Mismatch(format!(
                "tensor `{name}` has shape {shape:?}, this model needs {:?}",
                spec.shape
            )));
        }
        p.set_tensor(layout, &spec.name, &values)
            .map_err(CheckpointError::Mismatch)?;
    }
    Ok(())
}

impl<S: Scalar> Forecaster<S> {
    /// Serialises weights, optimiser state and every stream's state.
    pub fn to_safetensors(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.write_model(&mut w);
        self.write_streams(&mut w);
        w.into_bytes()
    }

    /// Serialises the shared weights and optimiser state only, with extra metadata.
    pub fn model_to_safetensors(&self, meta: &[(&str, String)]) -> Vec<u8> {
        let mut w = Writer::default();
        self.write_model(&mut w);
        for (k, v) in meta {
            w.meta(k, v.clone());
        }
        w.into_bytes()
    }

    fn write_model(&self, w: &mut Writer) {
        let cfg = self.config();
        let layout = self.layout();
        w.meta("format", "pt");
        w.meta("recur.format", "1");
        w.meta(
            "recur.config",
            serde_json::to_string(cfg).expect("config serialises"),
        );
        let shared = self.shared();
        w.meta("recur.updates", shared.updates.to_string());
        w.meta("recur.optimizer_step", shared.optimizer.step.to_string());
        put_params(w, layout, "", &shared.params);
        let (m_name, v_name) = moment_names(cfg.optimizer.kind, cfg.optimizer.momentum);
        if !m_name.is_empty() {
            put_params(
                w,
                layout,
                &format!("optimizer.{m_name}."),
                &shared.optimizer.m,
            );
        }
        if let Some(v_name) = v_name {
            put_params(
                w,
                layout,
                &format!("optimizer.{v_name}."),
                &shared.optimizer.v,
            );
        }
        if let Some(rls) = &shared.linear {
            let (p, q) = (rls.features(), rls.outputs());
            w.meta("recur.linear_updates", rls.updates.to_string());
            w.tensor("linear.weight", &[p, q], rls.weight.iter().copied());
            w.tensor("linear.cov", &[p, p], rls.cov.iter().copied());
        }
    }

    fn write_streams(&self, w: &mut Writer) {
        let cfg = self.config();
        let layout = self.layout();
        let (m_name, v_name) = moment_names(cfg.optimizer.kind, cfg.optimizer.momentum);
        let mut streams: Vec<(&str, &Stream<S>)> = self.streams().collect();
        streams.sort_by(|a, b| a.0.cmp(b.0));
        let keys: Vec<&str> = streams.iter().map(|s| s.0).collect();
        w.meta(
            "recur.streams",
            serde_json::to_string(&keys).expect("keys serialise"),
        );
        let n = streams.len();
        let sl = self.state_layout().len();
        let d = cfg.inputs;
        w.tensor(
            "streams.state",
            &[n, sl],
            streams.iter().flat_map(|s| s.1.buf.iter().copied()),
        );
        w.tensor(
            "streams.norm_mean",
            &[n, d],
            streams.iter().flat_map(|s| s.1.norm.mean.iter().copied()),
        );
        w.tensor(
            "streams.norm_spread",
            &[n, d],
            streams.iter().flat_map(|s| s.1.norm.spread.iter().copied()),
        );
        w.tensor_i64(
            "streams.counters",
            &[n, COUNTERS],
            streams.iter().flat_map(|(_, s)| {
                let phase = match s.norm.phase {
                    NormPhase::Off => 0,
                    NormPhase::Running => 1,
                    NormPhase::Frozen => 2,
                };
                let (updates, step) = s
                    .model
                    .as_ref()
                    .map_or((0, 0), |m| (m.updates, m.optimizer.step));
                [
                    s.seen as i64,
                    s.ring_len as i64,
                    s.ring_head as i64,
                    s.since_update as i64,
                    s.norm.count as i64,
                    phase,
                    updates as i64,
                    step as i64,
                ]
            }),
        );
        w.tensor_i64(
            "streams.clock",
            &[n, 2],
            streams
                .iter()
                .flat_map(|(_, s)| [s.last_ts_ms, s.touched as i64]),
        );
        if cfg.weight_scope == super::learner::WeightScope::PerStream {
            let p = layout.len;
            let models = || {
                streams
                    .iter()
                    .map(|s| s.1.model.as_deref().expect("per-stream scope has a model"))
            };
            w.tensor(
                "streams.params",
                &[n, p],
                models().flat_map(|m| m.params.data.iter().copied()),
            );
            if !m_name.is_empty() {
                w.tensor(
                    "streams.exp_avg",
                    &[n, p],
                    models().flat_map(|m| m.optimizer.m.data.iter().copied()),
                );
            }
            if v_name.is_some() {
                w.tensor(
                    "streams.exp_avg_sq",
                    &[n, p],
                    models().flat_map(|m| m.optimizer.v.data.iter().copied()),
                );
            }
            if let Some(rls) = &self.shared().linear {
                let (f, q) = (rls.features(), rls.outputs());
                let linears =
                    || models().map(|m| m.linear.as_ref().expect("stacking has a linear expert"));
                w.tensor(
                    "streams.linear_weight",
                    &[n, f * q],
                    linears().flat_map(|l| l.weight.iter().copied()),
                );
                w.tensor(
                    "streams.linear_cov",
                    &[n, f * f],
                    linears().flat_map(|l| l.cov.iter().copied()),
                );
                w.tensor_i64(
                    "streams.linear_updates",
                    &[n, 1],
                    linears().map(|l| l.updates as i64),
                );
            }
        }
    }

    /// Rebuilds a forecaster from [`Forecaster::to_safetensors`] bytes.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, CheckpointError> {
        let r = Reader::new(bytes)?;
        let cfg: ModelConfig = serde_json::from_str(r.need_meta("recur.config")?)
            .map_err(|e| bad(format!("metadata recur.config: {e}")))?;
        let mut f = Forecaster::<S>::new(cfg.clone()).map_err(CheckpointError::Mismatch)?;
        f.load_weights(&r)?;
        let keys: Vec<String> = serde_json::from_str(r.need_meta("recur.streams")?)
            .map_err(|e| bad(format!("metadata recur.streams: {e}")))?;
        let n = keys.len();
        let sl = f.state_layout().len();
        let d = cfg.inputs;
        let check = |name: &str, shape: &[usize], want: [usize; 2]| {
            if shape != want {
                Err(CheckpointError::Mismatch(format!(
                    "`{name}` has shape {shape:?}, expected {want:?}"
                )))
            } else {
                Ok(())
            }
        };
        let (shape, state) = r.tensor::<S>("streams.state")?;
        check("streams.state", &shape, [n, sl])?;
        let (shape, mean) = r.tensor_f64("streams.norm_mean")?;
        check("streams.norm_mean", &shape, [n, d])?;
        let (shape, spread) = r.tensor_f64("streams.norm_spread")?;
        check("streams.norm_spread", &shape, [n, d])?;
        let (shape, counters) = r.tensor_i64("streams.counters")?;
        check("streams.counters", &shape, [n, COUNTERS])?;
        let clock = if r.has("streams.clock") {
            let (shape, clock) = r.tensor_i64("streams.clock")?;
            check("streams.clock", &shape, [n, 2])?;
            clock
        } else {
            vec![0; n * 2]
        };
        let per_stream = if cfg.weight_scope == super::learner::WeightScope::PerStream {
            let p = f.layout().len;
            let (shape, params) = r.tensor::<S>("streams.params")?;
            check("streams.params", &shape, [n, p])?;
            let m = if r.has("streams.exp_avg") {
                Some(r.tensor::<S>("streams.exp_avg")?.1)
            } else {
                None
            };
            let v = if r.has("streams.exp_avg_sq") {
                Some(r.tensor::<S>("streams.exp_avg_sq")?.1)
            } else {
                None
            };
            let linear = match &f.shared().linear {
                Some(rls) => {
                    let (lf, q) = (rls.features(), rls.outputs());
                    let (shape, weight) = r.tensor_f64("streams.linear_weight")?;
                    check("streams.linear_weight", &shape, [n, lf * q])?;
                    let (shape, cov) = r.tensor_f64("streams.linear_cov")?;
                    check("streams.linear_cov", &shape, [n, lf * lf])?;
                    let (shape, updates) = r.tensor_i64("streams.linear_updates")?;
                    check("streams.linear_updates", &shape, [n, 1])?;
                    Some((lf * q, weight, lf * lf, cov, updates))
                }
                None => None,
            };
            Some((p, params, m, v, linear))
        } else {
            None
        };
        for (i, key) in keys.iter().enumerate() {
            let c = &counters[i * COUNTERS..(i + 1) * COUNTERS];
            if c.iter().any(|&v| v < 0) || c[5] > 2 {
                return Err(bad(format!(
                    "stream `{key}` has out-of-range counters {c:?}"
                )));
            }
            f.state_layout()
                .check_counters(c[0] as u64, c[1] as u64, c[2] as u64)
                .map_err(|reason| bad(format!("stream `{key}`: {reason}")))?;
            let phase = match c[5] {
                0 => NormPhase::Off,
                1 => NormPhase::Running,
                _ => NormPhase::Frozen,
            };
            let mut s = f.new_stream();
            s.buf = state[i * sl..(i + 1) * sl].into();
            s.norm = Normalizer {
                phase,
                count: c[4] as u64,
                mean: mean[i * d..(i + 1) * d].into(),
                spread: spread[i * d..(i + 1) * d].into(),
            };
            s.seen = c[0] as u64;
            s.ring_len = c[1] as u32;
            s.ring_head = c[2] as u32;
            s.since_update = c[3] as u32;
            s.last_ts_ms = clock[2 * i];
            s.touched = clock[2 * i + 1] as u64;
            if let (Some(model), Some((p, params, m, v, linear))) =
                (s.model.as_deref_mut(), per_stream.as_ref())
            {
                if let (Some(rls), Some((wq, weight, cq, cov, updates))) =
                    (model.linear.as_mut(), linear)
                {
                    rls.load(
                        &cov[i * cq..(i + 1) * cq],
                        &weight[i * wq..(i + 1) * wq],
                        updates[i] as u64,
                    );
                }
                let row = i * p..(i + 1) * p;
                model.params.data = Array1::from(params[row.clone()].to_vec());
                if let Some(m) = m {
                    model.optimizer.m.data = Array1::from(m[row.clone()].to_vec());
                }
                if let Some(v) = v {
                    model.optimizer.v.data = Array1::from(v[row].to_vec());
                }
                model.updates = c[6] as u64;
                model.optimizer.step = c[7] as u64;
            }
            f.insert_stream(key, s);
        }
        Ok(f)
    }

    /// Loads the shared weights and optimiser state of a checkpoint (warm start).
    pub fn load_weights(&mut self, r: &Reader<'_>) -> Result<(), CheckpointError> {
        let cfg = self.config().clone();
        if let Some(saved) = r.meta("recur.config") {
            let differences = meaning_diff(saved, &cfg);
            if !differences.is_empty() {
                return Err(CheckpointError::Mismatch(format!(
                    "the weights were trained for other equations ({}): they would load but forecast wrongly",
                    differences.join("; ")
                )));
            }
        }
        let layout = self.layout().clone();
        let mut model: Model<S> = self.shared().clone();
        get_params(r, &layout, "", &mut model.params)?;
        let (m_name, v_name) = moment_names(cfg.optimizer.kind, cfg.optimizer.momentum);
        let m_prefix = format!("optimizer.{m_name}.");
        if !m_name.is_empty() && r.has(&format!("{m_prefix}{}", layout.tensors[0].name)) {
            get_params(r, &layout, &m_prefix, &mut model.optimizer.m)?;
            if let Some(v_name) = v_name {
                get_params(
                    r,
                    &layout,
                    &format!("optimizer.{v_name}."),
                    &mut model.optimizer.v,
                )?;
            }
            model.optimizer.step = parse_meta(r, "recur.optimizer_step")?;
        }
        model.updates = parse_meta(r, "recur.updates").unwrap_or(0);
        if let Some(rls) = model.linear.as_mut()
            && r.has("linear.weight")
        {
            let (p, q) = (rls.features(), rls.outputs());
            let (shape, weight) = r.tensor_f64("linear.weight")?;
            let (cshape, cov) = r.tensor_f64("linear.cov")?;
            if shape != [p, q] || cshape != [p, p] {
                return Err(CheckpointError::Mismatch(format!(
                    "the linear expert is {shape:?} with covariance {cshape:?}, this model needs [{p}, {q}] and [{p}, {p}]"
                )));
            }
            rls.load(
                &cov,
                &weight,
                parse_meta(r, "recur.linear_updates").unwrap_or(0),
            );
        }
        *self.shared_mut() = model;
        Ok(())
    }

    /// Writes a checkpoint file atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_safetensors()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a checkpoint file.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_safetensors(&bytes)
    }
}

fn parse_meta(r: &Reader<'_>, key: &str) -> Result<u64, CheckpointError> {
    r.need_meta(key)?
        .parse()
        .map_err(|e| bad(format!("metadata `{key}`: {e}")))
}

/// The `[model]` keys that give the same tensors another meaning: the
/// cell's equations (`rnn` and `rnn_relu` share shapes) and what the head
/// forecasts. Shapes are checked tensor by tensor; keys that shape only a
/// stream's state (`learning`, `intervals`, `tbptt`, …) do not matter here.
const WEIGHT_MEANING_KEYS: [&str; 2] = ["cell", "predict"];

/// `key: checkpoint X, configured Y` for each [`WEIGHT_MEANING_KEYS`] entry on
/// which the checkpoint's `recur.config` (JSON) and `current` differ; a key
/// the checkpoint does not record is not compared.
fn meaning_diff(saved: &str, current: &ModelConfig) -> Vec<String> {
    let saved: Value = serde_json::from_str(saved).unwrap_or_default();
    let recorded: Vec<&str> = WEIGHT_MEANING_KEYS
        .into_iter()
        .filter(|k| saved.get(*k).is_some())
        .collect();
    config_differences(&saved, current, &recorded)
}

/// `key: checkpoint X, configured Y` for each of `keys` (top-level `[model]`
/// keys) whose value in `saved`, a [`ModelConfig`] as JSON (as a checkpoint's
/// `recur.config` records it), differs from `current`'s; `-` stands for a key
/// one side lacks.
pub fn config_differences(saved: &Value, current: &ModelConfig, keys: &[&str]) -> Vec<String> {
    let current = serde_json::to_value(current).unwrap_or_default();
    keys.iter()
        .filter(|k| saved.get(**k) != current.get(**k))
        .map(|k| {
            let show = |v: &Value| v.get(*k).map_or("-".into(), |x| x.to_string());
            format!(
                "{k}: checkpoint {}, configured {}",
                show(saved),
                show(&current)
            )
        })
        .collect()
}
