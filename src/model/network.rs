//! Forward and backward passes of a stacked recurrent network with a linear head.
//!
//! Shapes (PyTorch conventions, one sample, no batch):
//!
//! * input `x[t]`: D; hidden `h`, cell `c`: H per layer; gates: G·H per layer
//! * head: `y[t] = V h_top[t] + c`, `V`: (O, H)
//!
//! A recurrent *state* is one flat slice `[h_0 | h_1 | … | h_{L-1} | c_0 | … | c_{L-1}]`
//! (the `c` half only for the LSTM), of length [`Dims::state_len`].
//!
//! Cell equations (σ = logistic, ⊙ = elementwise):
//!
//! ```text
//! LSTM  i,f,g,o = σ,σ,tanh,σ (W_ih x + b_ih + W_hh h + b_hh)   c' = f⊙c + i⊙g   h' = o⊙tanh(c')
//! GRU   r,z = σ(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z})
//!       n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn))            h' = (1−z)⊙n + z⊙h
//! RNN   h' = tanh(W_ih x + b_ih + W_hh h + b_hh)   (or ReLU)
//! ```
//!
//! The backward pass is the hand-written BPTT of `../shared/reference/README.md`.
//! Every function here is pure arithmetic on caller-provided buffers: nothing
//! allocates per step.

// Index loops over the gates mirror the equations and vectorise well.
#![allow(clippy::needless_range_loop)]

use super::params::{CellKind, Dims, Layer, ParamLayout, Params};
use super::scalar::{Scalar, axpy, dot, gemv_acc, gemv_t_acc, ger_batch};

/// One cell step for one layer, in place.
///
/// On entry `h` and `c` hold the previous state (`c` is empty except for the
/// LSTM), on exit the new one. `gates` (G·H) receives the activations and `aux`
/// (G·H) what the backward pass needs besides them: `tanh(c')` for the LSTM,
/// `W_hh h + b_hh` for the GRU, nothing for the RNN.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn cell_forward<S: Scalar>(
    kind: CellKind,
    p: &Layer<'_, S>,
    x: &[S],
    h: &mut [S],
    c: &mut [S],
    gates: &mut [S],
    aux: &mut [S],
) {
    let hn = h.len();
    match kind {
        CellKind::Lstm | CellKind::Rnn | CellKind::RnnRelu => {
            for ((g, &bi), &bh) in gates.iter_mut().zip(p.b_ih).zip(p.b_hh) {
                *g = bi + bh;
            }
            gemv_acc(gates, p.w_ih, x);
            gemv_acc(gates, p.w_hh, h);
            match kind {
                CellKind::Lstm => {
                    let (ifg, o) = gates.split_at_mut(3 * hn);
                    let (if_, g) = ifg.split_at_mut(2 * hn);
                    S::sigmoid_inplace(if_);
                    S::tanh_inplace(g);
                    S::sigmoid_inplace(o);
                    let (i, f) = if_.split_at(hn);
                    for k in 0..hn {
                        c[k] = f[k] * c[k] + i[k] * g[k];
                    }
                    let tc = &mut aux[..hn];
                    S::tanh_into(c, tc);
                    for k in 0..hn {
                        h[k] = o[k] * tc[k];
                    }
                }
                CellKind::Rnn => S::tanh_into(gates, h),
                _ => {
                    for (hk, &a) in h.iter_mut().zip(gates.iter()) {
                        *hk = a.max(S::zero());
                    }
                }
            }
        }
        CellKind::Gru => {
            gates.copy_from_slice(p.b_ih);
            gemv_acc(gates, p.w_ih, x);
            aux.copy_from_slice(p.b_hh);
            gemv_acc(aux, p.w_hh, h);
            let (rz, n) = gates.split_at_mut(2 * hn);
            for (g, &a) in rz.iter_mut().zip(&aux[..2 * hn]) {
                *g += a;
            }
            S::sigmoid_inplace(rz);
            let (r, z) = rz.split_at(hn);
            let ghn = &aux[2 * hn..];
            for k in 0..hn {
                n[k] += r[k] * ghn[k];
            }
            S::tanh_inplace(n);
            for k in 0..hn {
                h[k] = (S::one() - z[k]) * n[k] + z[k] * h[k];
            }
        }
    }
}

/// Inputs of one layer's backward step, all read-only.
pub struct CellCache<'a, S> {
    /// The layer's input at this step.
    pub x: &'a [S],
    /// State entering the step.
    pub h_prev: &'a [S],
    /// Cell state entering the step (LSTM; empty otherwise).
    pub c_prev: &'a [S],
    /// State leaving the step.
    pub h: &'a [S],
    /// Activations written by [`cell_forward`].
    pub gates: &'a [S],
    /// Auxiliary values written by [`cell_forward`].
    pub aux: &'a [S],
}

/// Buffers for one layer's backward step.
pub struct CellGrads<'a, S> {
    /// dL/dh' in (H); becomes scratch.
    pub dh: &'a [S],
    /// dL/dc' from the future (H, LSTM); on exit dL/dc_prev.
    pub dc: &'a mut [S],
    /// Receives dL/d(W_ih x + b_ih), G·H.
    pub dgi: &'a mut [S],
    /// Receives dL/d(W_hh h + b_hh), G·H.
    pub dgh: &'a mut [S],
    /// Receives dL/dx (D_l), if wanted.
    pub dx: Option<&'a mut [S]>,
    /// Receives dL/dh_prev (H).
    pub dh_prev: &'a mut [S],
}

/// One layer's backward step: writes the gate gradients `dgi`, `dgh` (from
/// which the caller accumulates the weight gradients) and the gradients of the
/// step's inputs (see [`CellGrads`]).
#[inline(always)]
pub fn cell_backward<S: Scalar>(
    kind: CellKind,
    p: &Layer<'_, S>,
    cache: &CellCache<'_, S>,
    d: &mut CellGrads<'_, S>,
) {
    let hn = cache.h.len();
    let one = S::one();
    let dh = d.dh;
    // The GRU passes part of dh straight to h_prev; other cells do not.
    let mut direct = false;
    match kind {
        CellKind::Lstm => {
            let (i, rest) = cache.gates.split_at(hn);
            let (f, rest) = rest.split_at(hn);
            let (gg, o) = rest.split_at(hn);
            let tc = &cache.aux[..hn];
            let (da_i, rest) = d.dgi.split_at_mut(hn);
            let (da_f, rest) = rest.split_at_mut(hn);
            let (da_g, da_o) = rest.split_at_mut(hn);
            for k in 0..hn {
                let dc = dh[k] * o[k] * (one - tc[k] * tc[k]) + d.dc[k];
                da_i[k] = dc * gg[k] * i[k] * (one - i[k]);
                da_f[k] = dc * cache.c_prev[k] * f[k] * (one - f[k]);
                da_g[k] = dc * i[k] * (one - gg[k] * gg[k]);
                da_o[k] = dh[k] * tc[k] * o[k] * (one - o[k]);
                d.dc[k] = dc * f[k];
            }
            d.dgh.copy_from_slice(d.dgi);
        }
        CellKind::Gru => {
            let (r, rest) = cache.gates.split_at(hn);
            let (z, n) = rest.split_at(hn);
            let ghn = &cache.aux[2 * hn..];
            let (dar, rest) = d.dgi.split_at_mut(hn);
            let (daz, dan) = rest.split_at_mut(hn);
            for k in 0..hn {
                let dn = dh[k] * (one - z[k]);
                let dz = dh[k] * (cache.h_prev[k] - n[k]);
                dan[k] = dn * (one - n[k] * n[k]);
                dar[k] = dan[k] * ghn[k] * r[k] * (one - r[k]);
                daz[k] = dz * z[k] * (one - z[k]);
            }
            d.dgh[..2 * hn].copy_from_slice(&d.dgi[..2 * hn]);
            for k in 0..hn {
                d.dgh[2 * hn + k] = d.dgi[2 * hn + k] * r[k];
            }
            direct = true;
        }
        CellKind::Rnn => {
            for k in 0..hn {
                d.dgi[k] = dh[k] * (one - cache.h[k] * cache.h[k]);
            }
            d.dgh.copy_from_slice(d.dgi);
        }
        CellKind::RnnRelu => {
            for k in 0..hn {
                d.dgi[k] = if cache.h[k] > S::zero() {
                    dh[k]
                } else {
                    S::zero()
                };
            }
            d.dgh.copy_from_slice(d.dgi);
        }
    }
    if let Some(dx) = d.dx.as_deref_mut() {
        dx.fill(S::zero());
        gemv_t_acc(dx, p.w_ih, d.dgi);
    }
    if direct {
        let z = &cache.gates[hn..2 * hn];
        for k in 0..hn {
            d.dh_prev[k] = dh[k] * z[k];
        }
    } else {
        d.dh_prev.fill(S::zero());
    }
    gemv_t_acc(d.dh_prev, p.w_hh, d.dgh);
}

/// The head `y = V h + c` for one step.
#[inline(always)]
pub fn head_forward<S: Scalar>(v: &[S], c: &[S], h: &[S], y: &mut [S]) {
    let hn = h.len();
    for (o, yo) in y.iter_mut().enumerate() {
        *yo = c[o] + dot(&v[o * hn..(o + 1) * hn], h);
    }
}

/// Splits a state slice into its `h` part and its `c` part.
#[inline]
fn split_state<'a, S>(dims: &Dims, state: &'a mut [S]) -> (&'a mut [S], &'a mut [S]) {
    state.split_at_mut(dims.layers * dims.hidden)
}

/// Scratch for [`step`]: gates and auxiliary values of one layer.
#[derive(Clone, Debug)]
pub struct StepScratch<S> {
    gates: Vec<S>,
    aux: Vec<S>,
}

impl<S: Scalar> StepScratch<S> {
    /// Scratch sized for `dims`.
    pub fn new(dims: &Dims) -> Self {
        StepScratch {
            gates: vec![S::zero(); dims.gate_rows()],
            aux: vec![S::zero(); dims.gate_rows()],
        }
    }
}

/// Advances `state` by one input `x` through every layer (inference: nothing kept for backward).
#[inline(always)]
pub fn step<S: Scalar>(
    layout: &ParamLayout,
    params: &Params<S>,
    x: &[S],
    state: &mut [S],
    scratch: &mut StepScratch<S>,
) {
    let dims = &layout.dims;
    let hn = dims.hidden;
    let (hs, cs) = split_state(dims, state);
    for l in 0..dims.layers {
        let p = params.layer(layout, l);
        let (below, rest) = hs.split_at_mut(l * hn);
        let h = &mut rest[..hn];
        let c: &mut [S] = if cs.is_empty() {
            &mut []
        } else {
            &mut cs[l * hn..(l + 1) * hn]
        };
        let input: &[S] = if l == 0 { x } else { &below[(l - 1) * hn..] };
        cell_forward(
            dims.cell,
            &p,
            input,
            h,
            c,
            &mut scratch.gates,
            &mut scratch.aux,
        );
    }
}

/// The head applied to the top layer of `state`.
#[inline(always)]
pub fn forecast<S: Scalar>(layout: &ParamLayout, params: &Params<S>, state: &[S], y: &mut [S]) {
    let dims = &layout.dims;
    let top = &state[(dims.layers - 1) * dims.hidden..dims.layers * dims.hidden];
    let (v, c) = params.head(layout);
    head_forward(v, c, top, y);
}

/// Everything the backward pass needs from a forward pass over a window of up to `capacity` steps.
#[derive(Clone, Debug)]
pub struct Tape<S> {
    dims: Dims,
    capacity: usize,
    len: usize,
    /// `len + 1` states; slot 0 is the state entering the window.
    states: Vec<S>,
    gates: Vec<S>,
    aux: Vec<S>,
    // Backward scratch.
    dh_next: Vec<S>,
    dc_next: Vec<S>,
    dh: Vec<S>,
    /// Gate gradients of every step and layer (`T × L × G·H`), for the batched weight gradients.
    dgi: Vec<S>,
    dgh: Vec<S>,
    dx: Vec<S>,
    head_dh: Vec<S>,
}

impl<S: Scalar> Tape<S> {
    /// A tape for windows of up to `capacity` steps.
    pub fn new(dims: Dims, capacity: usize) -> Self {
        let sl = dims.state_len();
        let g = dims.layers * dims.gate_rows();
        let lh = dims.layers * dims.hidden;
        Tape {
            dims,
            capacity,
            len: 0,
            states: vec![S::zero(); (capacity + 1) * sl],
            gates: vec![S::zero(); capacity * g],
            aux: vec![S::zero(); capacity * g],
            dh_next: vec![S::zero(); lh],
            dc_next: vec![S::zero(); lh],
            dh: vec![S::zero(); dims.hidden],
            dgi: vec![S::zero(); capacity * g],
            dgh: vec![S::zero(); capacity * g],
            dx: vec![S::zero(); dims.hidden.max(dims.inputs)],
            head_dh: vec![S::zero(); dims.hidden],
        }
    }

    /// Steps recorded by the last forward pass.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no step is recorded.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The state after step `t` (`t = 0` is the state entering the window).
    pub fn state(&self, t: usize) -> &[S] {
        let sl = self.dims.state_len();
        &self.states[t * sl..(t + 1) * sl]
    }

    /// The top layer's `h` after step `t` (1-based like [`Tape::state`]).
    pub fn top(&self, t: usize) -> &[S] {
        let hn = self.dims.hidden;
        let l = self.dims.layers - 1;
        &self.state(t)[l * hn..(l + 1) * hn]
    }

    /// Runs the window `xs` (`T × D`, row-major) from `init`, recording every step.
    #[inline(always)]
    pub fn forward(&mut self, layout: &ParamLayout, params: &Params<S>, xs: &[S], init: &[S]) {
        let dims = self.dims;
        let d = dims.inputs;
        let t_len = xs.len() / d;
        assert!(
            t_len <= self.capacity,
            "window of {t_len} steps exceeds tape capacity {}",
            self.capacity
        );
        let sl = dims.state_len();
        let hn = dims.hidden;
        let gr = dims.gate_rows();
        self.len = t_len;
        self.states[..sl].copy_from_slice(init);
        for t in 0..t_len {
            let (prev, next) = self.states.split_at_mut((t + 1) * sl);
            let next = &mut next[..sl];
            next.copy_from_slice(&prev[t * sl..]);
            let (hs, cs) = split_state(&dims, next);
            for l in 0..dims.layers {
                let p = params.layer(layout, l);
                let (below, rest) = hs.split_at_mut(l * hn);
                let h = &mut rest[..hn];
                let c: &mut [S] = if cs.is_empty() {
                    &mut []
                } else {
                    &mut cs[l * hn..(l + 1) * hn]
                };
                let input: &[S] = if l == 0 {
                    &xs[t * d..(t + 1) * d]
                } else {
                    &below[(l - 1) * hn..]
                };
                let at = (t * dims.layers + l) * gr;
                cell_forward(
                    dims.cell,
                    &p,
                    input,
                    h,
                    c,
                    &mut self.gates[at..at + gr],
                    &mut self.aux[at..at + gr],
                );
            }
        }
    }

    /// Head output after step `t` (1-based), into `y` (O).
    #[inline(always)]
    pub fn head(&self, layout: &ParamLayout, params: &Params<S>, t: usize, y: &mut [S]) {
        let (v, c) = params.head(layout);
        head_forward(v, c, self.top(t), y);
    }

    /// Backpropagates through the recorded window.
    ///
    /// `dys` holds dL/dy for the last `dys.len() / O` steps of the window (row-major,
    /// oldest first); earlier steps carry no loss. Parameter gradients are
    /// *added* to `grads`. `dxs` (`T × D`), if given, receives dL/dx; `d_init`
    /// (state length) receives dL/d(state entering the window).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn backward(
        &mut self,
        layout: &ParamLayout,
        params: &Params<S>,
        xs: &[S],
        dys: &[S],
        grads: &mut Params<S>,
        mut dxs: Option<&mut [S]>,
        d_init: &mut [S],
    ) {
        let dims = self.dims;
        let (d, hn, gr, nl, o) = (
            dims.inputs,
            dims.hidden,
            dims.gate_rows(),
            dims.layers,
            dims.outputs,
        );
        let t_len = self.len;
        let sl = dims.state_len();
        let lstm = dims.cell.has_cell_state();
        let n_dy = dys.len() / o;
        assert!(
            n_dy <= t_len,
            "loss on {n_dy} steps of a {t_len}-step window"
        );
        let first_dy = t_len - n_dy;
        self.dh_next.fill(S::zero());
        self.dc_next.fill(S::zero());
        let (v, _) = params.head(layout);
        for t in (0..t_len).rev() {
            // Head: dV += dy h_topᵀ, dc += dy, and Vᵀ dy flows into the top layer.
            self.head_dh.fill(S::zero());
            if t >= first_dy {
                let dy = &dys[(t - first_dy) * o..(t - first_dy + 1) * o];
                let top_start = (t + 1) * sl + (nl - 1) * hn;
                let top = &self.states[top_start..top_start + hn];
                let (gv, gc) = grads.head_mut(layout);
                for (k, &dyk) in dy.iter().enumerate() {
                    axpy(&mut gv[k * hn..(k + 1) * hn], dyk, top);
                    gc[k] += dyk;
                    axpy(&mut self.head_dh, dyk, &v[k * hn..(k + 1) * hn]);
                }
            }
            for l in (0..nl).rev() {
                // dh = dL/dh from the future + from above (head or the next layer's dx).
                for k in 0..hn {
                    let from_above = if l == nl - 1 {
                        self.head_dh[k]
                    } else {
                        self.dx[k]
                    };
                    self.dh[k] = self.dh_next[l * hn + k] + from_above;
                }
                let p = params.layer(layout, l);
                let at = (t * nl + l) * gr;
                let prev = &self.states[t * sl..(t + 1) * sl];
                let next = &self.states[(t + 1) * sl..(t + 2) * sl];
                let x: &[S] = if l == 0 {
                    &xs[t * d..(t + 1) * d]
                } else {
                    &next[(l - 1) * hn..l * hn]
                };
                let cache = CellCache {
                    x,
                    h_prev: &prev[l * hn..(l + 1) * hn],
                    c_prev: if lstm {
                        &prev[(nl + l) * hn..(nl + l + 1) * hn]
                    } else {
                        &[]
                    },
                    h: &next[l * hn..(l + 1) * hn],
                    gates: &self.gates[at..at + gr],
                    aux: &self.aux[at..at + gr],
                };
                let dx: Option<&mut [S]> = if l > 0 {
                    Some(&mut self.dx[..hn])
                } else {
                    dxs.as_deref_mut().map(|dxs| &mut dxs[t * d..(t + 1) * d])
                };
                let mut cg = CellGrads {
                    dh: &self.dh,
                    dc: &mut self.dc_next[l * hn..(l + 1) * hn],
                    dgi: &mut self.dgi[at..at + gr],
                    dgh: &mut self.dgh[at..at + gr],
                    dx,
                    dh_prev: &mut self.dh_next[l * hn..(l + 1) * hn],
                };
                cell_backward(dims.cell, &p, &cache, &mut cg);
            }
        }
        // Weight gradients as one rank-T update per matrix: dW_ih = Σ_t dgi_t x_tᵀ,
        // dW_hh = Σ_t dgh_t h_{t-1}ᵀ, db = Σ_t dg_t. Cheaper than T rank-one updates.
        for l in 0..nl {
            let g = grads.layer_mut(layout, l);
            let (dgi, dgh) = (&self.dgi[..t_len * nl * gr], &self.dgh[..t_len * nl * gr]);
            let stride = nl * gr;
            if l == 0 {
                ger_batch(g.w_ih, gr, dgi, stride, l * gr, xs, d, 0, t_len);
            } else {
                ger_batch(
                    g.w_ih,
                    gr,
                    dgi,
                    stride,
                    l * gr,
                    &self.states[sl..],
                    sl,
                    (l - 1) * hn,
                    t_len,
                );
            }
            ger_batch(
                g.w_hh,
                gr,
                dgh,
                stride,
                l * gr,
                &self.states,
                sl,
                l * hn,
                t_len,
            );
            for t in 0..t_len {
                let at = t * stride + l * gr;
                for (b, &v) in g.b_ih.iter_mut().zip(&dgi[at..at + gr]) {
                    *b += v;
                }
                for (b, &v) in g.b_hh.iter_mut().zip(&dgh[at..at + gr]) {
                    *b += v;
                }
            }
        }
        d_init[..nl * hn].copy_from_slice(&self.dh_next);
        if lstm {
            d_init[nl * hn..].copy_from_slice(&self.dc_next);
        }
    }
}
