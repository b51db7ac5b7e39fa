//! Changelog records: their keys and the binary form of one stream's state.
//!
//! Keys (UTF-8):
//!
//! | key | value |
//! |---|---|
//! | `<partition>` | the head: shared weights and optimiser (safetensors) plus the checkpoint's sequence number, slot and covered input offset |
//! | `<partition>/<slot>/<stream>` | one stream's state ([`encode_stream`]), slot 0 or 1 |
//!
//! Checkpoint `k` writes slot `k % 2` and then the head, so the slot a
//! complete checkpoint names is never touched by the next (maybe unfinished)
//! one: a crash mid-checkpoint leaves the previous checkpoint whole, even on a
//! compacted topic that keeps only the latest record per key.
//!
//! A stream record is little-endian: magic `RCS1`, then `seq u64`,
//! `last_ts_ms i64`, `seen u64`, `ring_len u32`, `ring_head u32`,
//! `since_update u32`, `norm_phase u8` (0 off, 1 running, 2 frozen),
//! `norm_count u64`, `scalar_bytes u8`, `buf_len u32` + `buf`, `width u32` +
//! `mean` and `spread` (f64), and `has_model u8` followed, for per-stream
//! weights, by `updates u64`, `step u64` and the length-prefixed params and
//! optimiser moments, then (with stacking) the linear expert's `updates u64`
//! and its length-prefixed weights and covariance (f64).

use crate::model::Scalar;
use crate::model::learner::{Model, Stream};
use crate::model::normalize::NormPhase;

const MAGIC: &[u8; 4] = b"RCS1";

/// What a changelog key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key<'a> {
    /// A partition's head record.
    Head {
        /// Input partition.
        partition: i32,
    },
    /// One stream's state in one slot.
    Stream {
        /// Input partition.
        partition: i32,
        /// Slot, 0 or 1.
        slot: u8,
        /// Stream id.
        stream: &'a str,
    },
}

impl<'a> Key<'a> {
    /// The key's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Key::Head { partition } => partition.to_string().into_bytes(),
            Key::Stream {
                partition,
                slot,
                stream,
            } => format!("{partition}/{slot}/{stream}").into_bytes(),
        }
    }

    /// Parses a key; `None` for keys recur did not write.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(3, '/');
        let partition = parts.next()?.parse().ok()?;
        match (parts.next(), parts.next()) {
            (None, _) => Some(Key::Head { partition }),
            (Some(slot), Some(stream)) => {
                let slot = match slot {
                    "0" => 0,
                    "1" => 1,
                    _ => return None,
                };
                Some(Key::Stream {
                    partition,
                    slot,
                    stream,
                })
            }
            _ => None,
        }
    }
}

/// A stream record that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("changelog record of stream `{stream}`: {reason}")]
pub struct RecordError {
    /// The stream.
    pub stream: String,
    /// What is wrong.
    pub reason: String,
}

/// The fixed-size prefix of a stream record, readable without decoding the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// Checkpoint sequence number the record was written at.
    pub seq: u64,
    /// Newest event time of the stream, epoch ms.
    pub last_ts_ms: i64,
}

/// Appends `stream`'s state, written at checkpoint `seq`, to `out`.
pub fn encode_stream<S: Scalar>(out: &mut Vec<u8>, seq: u64, s: &Stream<S>) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&s.last_ts_ms.to_le_bytes());
    out.extend_from_slice(&s.seen.to_le_bytes());
    for v in [s.ring_len, s.ring_head, s.since_update] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(match s.norm.phase {
        NormPhase::Off => 0,
        NormPhase::Running => 1,
        NormPhase::Frozen => 2,
    });
    out.extend_from_slice(&s.norm.count.to_le_bytes());
    out.push(S::BYTES as u8);
    put_floats(out, s.buf.iter().copied());
    out.extend_from_slice(&(s.norm.mean.len() as u32).to_le_bytes());
    for v in s.norm.mean.iter().chain(s.norm.spread.iter()) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    match &s.model {
        None => out.push(0),
        Some(m) => {
            out.push(1);
            out.extend_from_slice(&m.updates.to_le_bytes());
            out.extend_from_slice(&m.optimizer.step.to_le_bytes());
            put_floats(out, m.params.data.iter().copied());
            put_floats(out, m.optimizer.m.data.iter().copied());
            put_floats(out, m.optimizer.v.data.iter().copied());
            if let Some(l) = &m.linear {
                out.extend_from_slice(&l.updates.to_le_bytes());
                put_floats(out, l.weight.iter().copied());
                put_floats(out, l.cov.iter().copied());
            }
        }
    }
}

fn put_floats<S: Scalar>(out: &mut Vec<u8>, values: impl ExactSizeIterator<Item = S>) {
    out.extend_from_slice(&(values.len() as u32).to_le_bytes());
    for v in values {
        S::put_le(v, out);
    }
}

/// Reads the sequence number and event time of a stream record.
pub fn stream_header(bytes: &[u8]) -> Option<StreamHeader> {
    if bytes.len() < 20 || &bytes[..4] != MAGIC {
        return None;
    }
    Some(StreamHeader {
        seq: u64::from_le_bytes(bytes[4..12].try_into().ok()?),
        last_ts_ms: i64::from_le_bytes(bytes[12..20].try_into().ok()?),
    })
}

/// Decodes a stream record into `s` (a fresh stream of the right shape: its
/// buffer length and, with per-stream weights, its model say what fits).
pub fn decode_stream<S: Scalar>(
    stream: &str,
    bytes: &[u8],
    s: &mut Stream<S>,
) -> Result<StreamHeader, RecordError> {
    let err = |reason: String| RecordError {
        stream: stream.to_string(),
        reason,
    };
    let header = stream_header(bytes).ok_or_else(|| err("not a recur stream record".into()))?;
    let mut r = Cursor {
        bytes,
        at: 20,
        stream,
    };
    s.last_ts_ms = header.last_ts_ms;
    s.seen = r.u64()?;
    s.ring_len = r.u32()?;
    s.ring_head = r.u32()?;
    s.since_update = r.u32()?;
    let phase = match r.u8()? {
        0 => NormPhase::Off,
        1 => NormPhase::Running,
        2 => NormPhase::Frozen,
        p => return Err(err(format!("normaliser phase {p}"))),
    };
    let count = r.u64()?;
    let width = r.u8()? as usize;
    if width != S::BYTES {
        return Err(err(format!(
            "written with {width}-byte floats, this learner uses {}",
            S::BYTES
        )));
    }
    r.floats_into(&mut s.buf, "state")?;
    let d = r.u32()? as usize;
    if d != s.norm.mean.len() {
        return Err(err(format!(
            "{d} inputs, this learner has {}",
            s.norm.mean.len()
        )));
    }
    // Into the normaliser's own buffers: no allocation per stream.
    for i in 0..d {
        s.norm.mean[i] = r.f64()?;
    }
    for i in 0..d {
        s.norm.spread[i] = r.f64()?;
    }
    s.norm.phase = phase;
    s.norm.count = count;
    match (r.u8()?, s.model.as_deref_mut()) {
        (0, None) => {}
        (1, Some(m)) => read_model(&mut r, m)?,
        (flag, m) => {
            return Err(err(format!(
                "per-stream weights {} in the record, {} in this learner",
                if flag == 1 { "present" } else { "absent" },
                if m.is_some() { "present" } else { "absent" },
            )));
        }
    }
    if r.at != bytes.len() {
        return Err(err(format!("{} trailing bytes", bytes.len() - r.at)));
    }
    if s.ring_len as usize > s.buf.len() || s.ring_head as usize > s.buf.len() {
        return Err(err("ring counters out of range".into()));
    }
    Ok(header)
}

fn read_model<S: Scalar>(r: &mut Cursor<'_>, m: &mut Model<S>) -> Result<(), RecordError> {
    m.updates = r.u64()?;
    m.optimizer.step = r.u64()?;
    r.floats_into(m.params.data.as_slice_mut().expect("contiguous"), "params")?;
    r.floats_into(m.optimizer.m.data.as_slice_mut().expect("contiguous"), "m")?;
    r.floats_into(m.optimizer.v.data.as_slice_mut().expect("contiguous"), "v")?;
    if let Some(l) = m.linear.as_mut() {
        l.updates = r.u64()?;
        r.floats_into(&mut l.weight, "linear weights")?;
        r.floats_into(&mut l.cov, "linear covariance")?;
    }
    Ok(())
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    stream: &'a str,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RecordError> {
        let end = self.at + n;
        if end > self.bytes.len() {
            return Err(RecordError {
                stream: self.stream.to_string(),
                reason: format!("truncated at byte {} of {}", self.at, self.bytes.len()),
            });
        }
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn f64(&mut self) -> Result<f64, RecordError> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn floats_into<S: Scalar>(&mut self, dst: &mut [S], what: &str) -> Result<(), RecordError> {
        let n = self.u32()? as usize;
        if n != dst.len() {
            return Err(RecordError {
                stream: self.stream.to_string(),
                reason: format!("{what} has {n} values, this learner needs {}", dst.len()),
            });
        }
        let raw = self.take(n * S::BYTES)?;
        for (d, c) in dst.iter_mut().zip(raw.chunks_exact(S::BYTES)) {
            *d = S::get_le(c);
        }
        // recur never writes a non-finite value (updates that would are rolled back).
        if let Some(i) = dst.iter().position(|v| !v.is_finite()) {
            return Err(RecordError {
                stream: self.stream.to_string(),
                reason: format!("{what} value {i} is not finite"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::linear::Lags;
    use crate::model::{Forecaster, ModelConfig, WeightScope};

    /// A stream with its own weights, linear expert and stacking cells comes
    /// back from its record exactly as it was.
    #[test]
    fn a_per_stream_model_with_its_linear_expert_round_trips() {
        let cfg = ModelConfig {
            weight_scope: WeightScope::PerStream,
            hidden: 4,
            horizon: 2,
            linear: crate::model::linear::LinearConfig {
                lags: Lags::Rows(3),
                ..Default::default()
            },
            ..ModelConfig::default()
        };
        let mut f = Forecaster::<f32>::new(cfg).unwrap();
        for t in 0..40 {
            f.observe("s", &[(t as f32 * 0.3).sin()]).unwrap();
        }
        let s = f.stream("s").unwrap();
        let linear = s.model.as_ref().unwrap().linear.as_ref().unwrap();
        assert!(linear.updates > 0, "the linear expert learned");
        let mut bytes = Vec::new();
        encode_stream(&mut bytes, 7, s);
        let mut back = f.new_stream();
        assert_eq!(decode_stream("s", &bytes, &mut back).unwrap().seq, 7);
        assert_eq!(&back, s);
    }
}
