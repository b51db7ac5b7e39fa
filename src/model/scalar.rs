//! The floating-point element type and the few dense kernels the cells need.
//!
//! The model is generic over [`Scalar`]: `f32` on the live path, `f64` for the
//! reference checks against PyTorch. Matrices are stored column-major (each
//! column of `W` contiguous), so a mat-vec is a sequence of contiguous `axpy`s
//! and a transposed mat-vec a sequence of contiguous dot products. Every
//! reduction here accumulates into a fixed number of lanes and combines them in
//! a fixed order: the result depends only on the inputs, never on the CPU's
//! vector width, which keeps runs bit-identical while letting LLVM vectorise.

// Index loops over fixed-size blocks are deliberate: they are what LLVM vectorises.
#![allow(clippy::needless_range_loop)]

use std::fmt::{Debug, Display};
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

use num_traits::Float;

pub use super::simd::Kernels;

/// Independent accumulators per reduction: 16 lanes fill one AVX-512 or two
/// AVX2 registers and hide the add latency.
const LANES: usize = 16;

/// Element type of every tensor: `f32` or `f64`.
pub trait Scalar:
    Float
    + Default
    + Debug
    + Display
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Send
    + Sync
    + 'static
{
    /// Name of the type in safetensors headers (`F32` or `F64`).
    const DTYPE: &'static str;
    /// Size in bytes.
    const BYTES: usize;

    /// Converts from `f64` (rounding to nearest for `f32`).
    fn of(x: f64) -> Self;
    /// Widens to `f64`.
    fn f64(self) -> f64;
    /// In-place logistic sigmoid.
    fn sigmoid_inplace(xs: &mut [Self]);
    /// In-place hyperbolic tangent.
    fn tanh_inplace(xs: &mut [Self]);
    /// `out[i] = tanh(xs[i])`.
    fn tanh_into(xs: &[Self], out: &mut [Self]);
    /// Appends the little-endian bytes of `x`.
    fn put_le(x: Self, out: &mut Vec<u8>);
    /// Reads one value from exactly [`Scalar::BYTES`] little-endian bytes.
    fn get_le(bytes: &[u8]) -> Self;
    /// Hand-vectorised kernels for this type on this CPU, if there are any.
    #[inline(always)]
    fn kernels() -> Option<&'static Kernels<Self>> {
        None
    }
}

impl Scalar for f64 {
    const DTYPE: &'static str = "F64";
    const BYTES: usize = 8;

    #[inline(always)]
    fn of(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn sigmoid_inplace(xs: &mut [Self]) {
        for x in xs {
            *x = 1.0 / (1.0 + (-*x).exp());
        }
    }
    #[inline(always)]
    fn tanh_inplace(xs: &mut [Self]) {
        for x in xs {
            *x = x.tanh();
        }
    }
    #[inline(always)]
    fn tanh_into(xs: &[Self], out: &mut [Self]) {
        for (o, x) in out.iter_mut().zip(xs) {
            *o = x.tanh();
        }
    }
    fn put_le(x: Self, out: &mut Vec<u8>) {
        out.extend_from_slice(&x.to_le_bytes());
    }
    fn get_le(bytes: &[u8]) -> Self {
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        f64::from_le_bytes(b)
    }
}

impl Scalar for f32 {
    const DTYPE: &'static str = "F32";
    const BYTES: usize = 4;

    #[inline(always)]
    fn kernels() -> Option<&'static Kernels<f32>> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Some(&super::simd::AVX2);
        }
        None
    }

    #[inline(always)]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn sigmoid_inplace(xs: &mut [Self]) {
        for x in xs {
            *x = 1.0 / (1.0 + exp_f32(-*x));
        }
    }
    #[inline(always)]
    fn tanh_inplace(xs: &mut [Self]) {
        for x in xs {
            *x = tanh_f32(*x);
        }
    }
    #[inline(always)]
    fn tanh_into(xs: &[Self], out: &mut [Self]) {
        for (o, x) in out.iter_mut().zip(xs) {
            *o = tanh_f32(*x);
        }
    }
    fn put_le(x: Self, out: &mut Vec<u8>) {
        out.extend_from_slice(&x.to_le_bytes());
    }
    fn get_le(bytes: &[u8]) -> Self {
        let mut b = [0u8; 4];
        b.copy_from_slice(bytes);
        f32::from_le_bytes(b)
    }
}

/// `e^x` for `f32` without branches or libm calls, so loops over it vectorise.
///
/// Cephes' `expf` polynomial after the usual `x = n ln2 + r` reduction; within
/// 2 ulp of `f32::exp` on [-87, 88]. Inputs outside are clamped, which saturates
/// sigmoid and tanh exactly as the true function does in `f32`.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let p = p * r * r + r + 1.0;
    f32::from_bits(((ni + 127) << 23) as u32) * p
}

/// `tanh` for `f32` via [`exp_f32`]; absolute error below 2e-7.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    1.0 - 2.0 / (1.0 + exp_f32(2.0 * x))
}

/// `out += W x` for a column-major `W` with `out.len()` rows and `x.len()` columns.
///
/// Rows go in blocks of 64, 32 and 16 whose accumulators stay in registers
/// across all columns; a 64-row block gives eight independent vector chains,
/// enough to hide the add latency.
#[inline(always)]
pub fn gemv_acc<S: Scalar>(out: &mut [S], w: &[S], x: &[S]) {
    match S::kernels() {
        // SAFETY: `kernels()` only returns kernels the CPU supports.
        Some(k) => unsafe { (k.gemv_acc)(out, w, x) },
        None => gemv_acc_portable(out, w, x),
    }
}

/// The portable [`gemv_acc`].
#[inline(always)]
pub fn gemv_acc_portable<S: Scalar>(out: &mut [S], w: &[S], x: &[S]) {
    let rows = out.len();
    debug_assert_eq!(w.len(), rows * x.len());
    let mut r0 = 0;
    r0 = gemv_blocks::<S, 64>(out, w, x, r0);
    r0 = gemv_blocks::<S, 32>(out, w, x, r0);
    r0 = gemv_blocks::<S, 16>(out, w, x, r0);
    if r0 < rows {
        for (j, &xj) in x.iter().enumerate() {
            let col = &w[j * rows..(j + 1) * rows];
            for r in r0..rows {
                out[r] += col[r] * xj;
            }
        }
    }
}

/// Whole `N`-row blocks of [`gemv_acc`] from row `r0`; returns the first row not done.
#[inline(always)]
fn gemv_blocks<S: Scalar, const N: usize>(out: &mut [S], w: &[S], x: &[S], mut r0: usize) -> usize {
    let rows = out.len();
    while r0 + N <= rows {
        let mut acc = [S::zero(); N];
        acc.copy_from_slice(&out[r0..r0 + N]);
        for (j, &xj) in x.iter().enumerate() {
            let col = &w[j * rows + r0..j * rows + r0 + N];
            for k in 0..N {
                acc[k] += col[k] * xj;
            }
        }
        out[r0..r0 + N].copy_from_slice(&acc);
        r0 += N;
    }
    r0
}

/// Lanes of a dot product: one AVX2 register of `f32`.
const DOT_LANES: usize = 8;

/// Dot product with a fixed lane structure: lane `k` sums the products at
/// indices `≡ k (mod 8)` in order, the tail goes to the first lanes, and the
/// lanes combine as `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`.
#[inline(always)]
pub fn dot<S: Scalar>(a: &[S], b: &[S]) -> S {
    const LANES: usize = DOT_LANES;
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [S::zero(); LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for k in 0..LANES {
            acc[k] += xa[k] * xb[k];
        }
    }
    for (k, (&x, &y)) in ra.iter().zip(rb).enumerate() {
        acc[k] += x * y;
    }
    // Pairwise combine: a fixed tree, independent of the target's vector width.
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for k in 0..width {
            acc[k] += acc[k + width];
        }
    }
    acc[0]
}

/// `out[j] += dot(W[:, j], y)`: adds `Wᵀ y` for a column-major `W` with `y.len()` rows.
#[inline(always)]
pub fn gemv_t_acc<S: Scalar>(out: &mut [S], w: &[S], y: &[S]) {
    match S::kernels() {
        // SAFETY: `kernels()` only returns kernels the CPU supports, and
        // the vector kernel takes whole registers of rows.
        Some(k) if y.len().is_multiple_of(8) => unsafe { (k.gemv_t_acc)(out, w, y) },
        _ => gemv_t_acc_portable(out, w, y),
    }
}

/// The portable [`gemv_t_acc`].
#[inline(always)]
pub fn gemv_t_acc_portable<S: Scalar>(out: &mut [S], w: &[S], y: &[S]) {
    let rows = y.len();
    debug_assert_eq!(w.len(), rows * out.len());
    for (j, o) in out.iter_mut().enumerate() {
        *o += dot(&w[j * rows..(j + 1) * rows], y);
    }
}

/// Rank-`steps` update `W += Σ_t a_t b_tᵀ` for a column-major `W`.
///
/// `a_t = a[t * a_stride + a_off ..][..rows]` (`rows` = rows of `W`) and
/// `b_t = b[t * b_stride + b_off ..][..cols]`. Blocks of each output column
/// stay in registers while all `t` are summed, so `W` is read and written once.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn ger_batch<S: Scalar>(
    w: &mut [S],
    rows: usize,
    a: &[S],
    a_stride: usize,
    a_off: usize,
    b: &[S],
    b_stride: usize,
    b_off: usize,
    steps: usize,
) {
    match S::kernels() {
        // SAFETY: `kernels()` only returns kernels the CPU supports.
        Some(k) => unsafe { (k.ger_batch)(w, rows, a, a_stride, a_off, b, b_stride, b_off, steps) },
        None => ger_batch_portable(w, rows, a, a_stride, a_off, b, b_stride, b_off, steps),
    }
}

/// The portable [`ger_batch`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn ger_batch_portable<S: Scalar>(
    w: &mut [S],
    rows: usize,
    a: &[S],
    a_stride: usize,
    a_off: usize,
    b: &[S],
    b_stride: usize,
    b_off: usize,
    steps: usize,
) {
    let cols = w.len() / rows;
    for j in 0..cols {
        let col = &mut w[j * rows..(j + 1) * rows];
        let bj = |t: usize| b[t * b_stride + b_off + j];
        let a_off_j = |t: usize| t * a_stride + a_off;
        let mut r0 = 0;
        r0 = ger_blocks::<S, 64>(col, a, &a_off_j, &bj, steps, r0);
        r0 = ger_blocks::<S, 16>(col, a, &a_off_j, &bj, steps, r0);
        for t in 0..steps {
            let (ao, bt) = (a_off_j(t), bj(t));
            for r in r0..rows {
                col[r] += a[ao + r] * bt;
            }
        }
    }
}

/// Whole `N`-row blocks of one column of [`ger_batch`]; returns the first row not done.
#[inline(always)]
fn ger_blocks<S: Scalar, const N: usize>(
    col: &mut [S],
    a: &[S],
    a_at: &impl Fn(usize) -> usize,
    b_at: &impl Fn(usize) -> S,
    steps: usize,
    mut r0: usize,
) -> usize {
    while r0 + N <= col.len() {
        let mut acc = [S::zero(); N];
        acc.copy_from_slice(&col[r0..r0 + N]);
        for t in 0..steps {
            let ao = a_at(t) + r0;
            let at = &a[ao..ao + N];
            let bt = b_at(t);
            for k in 0..N {
                acc[k] += at[k] * bt;
            }
        }
        col[r0..r0 + N].copy_from_slice(&acc);
        r0 += N;
    }
    r0
}

/// Rank-one update `W += a bᵀ` for a column-major `W` with `a.len()` rows.
#[inline(always)]
pub fn ger_acc<S: Scalar>(w: &mut [S], a: &[S], b: &[S]) {
    let rows = a.len();
    debug_assert_eq!(w.len(), rows * b.len());
    for (j, &bj) in b.iter().enumerate() {
        axpy(&mut w[j * rows..(j + 1) * rows], bj, a);
    }
}

/// `y += alpha x`.
#[inline(always)]
pub fn axpy<S: Scalar>(y: &mut [S], alpha: S, x: &[S]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `y += x`.
#[inline(always)]
pub fn add_assign<S: Scalar>(y: &mut [S], x: &[S]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += xi;
    }
}

/// Sum of squares with the same fixed lane structure as [`dot`].
#[inline(always)]
pub fn sum_sq<S: Scalar>(a: &[S]) -> S {
    dot(a, a)
}

/// True when every element is finite.
#[inline(always)]
pub fn all_finite<S: Scalar>(a: &[S]) -> bool {
    // `x * 0` is NaN iff x is NaN or infinite; independent lanes let this vectorise.
    let mut acc = [S::zero(); LANES];
    let chunks = a.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            acc[k] += c[k] * S::zero();
        }
    }
    for (k, &x) in rest.iter().enumerate() {
        acc[k] += x * S::zero();
    }
    acc.iter().all(|&v| v == S::zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_and_tanh_track_libm() {
        let mut worst_exp_rel = 0.0f64;
        let mut worst_tanh = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let e = exp_f32(x) as f64;
            let want = (x as f64).exp();
            worst_exp_rel = worst_exp_rel.max(((e - want) / want).abs());
            let t = tanh_f32(x / 8.0) as f64;
            worst_tanh = worst_tanh.max((t - (x as f64 / 8.0).tanh()).abs());
            x += 0.0137;
        }
        assert!(worst_exp_rel < 3e-7, "exp relative error {worst_exp_rel}");
        assert!(worst_tanh < 3e-7, "tanh absolute error {worst_tanh}");
        assert_eq!(tanh_f32(50.0), 1.0);
        assert_eq!(tanh_f32(-50.0), -1.0);
        assert_eq!(exp_f32(-1000.0), exp_f32(-87.0));
    }

    #[test]
    fn kernels_match_naive_loops() {
        let rows = 37; // not a multiple of the lane count: exercises the tails
        let cols = 5;
        let w: Vec<f64> = (0..rows * cols).map(|i| (i as f64 * 0.37).sin()).collect();
        let x: Vec<f64> = (0..cols).map(|i| i as f64 - 1.5).collect();
        let y: Vec<f64> = (0..rows).map(|i| (i as f64).cos()).collect();
        let mut out = vec![1.0; rows];
        gemv_acc(&mut out, &w, &x);
        for r in 0..rows {
            let want: f64 = 1.0 + (0..cols).map(|j| w[j * rows + r] * x[j]).sum::<f64>();
            assert!((out[r] - want).abs() < 1e-12);
        }
        let mut back = vec![0.0; cols];
        gemv_t_acc(&mut back, &w, &y);
        for j in 0..cols {
            let want: f64 = (0..rows).map(|r| w[j * rows + r] * y[r]).sum();
            assert!((back[j] - want).abs() < 1e-12);
        }
        // Three steps of a batched rank-one update equal three single ones.
        let a: Vec<f64> = (0..3 * rows).map(|i| (i as f64 * 0.11).cos()).collect();
        let b: Vec<f64> = (0..3 * cols).map(|i| i as f64 * 0.5 - 2.0).collect();
        let mut batched = vec![0.5; rows * cols];
        ger_batch(&mut batched, rows, &a, rows, 0, &b, cols, 0, 3);
        let mut single = vec![0.5; rows * cols];
        for t in 0..3 {
            ger_acc(
                &mut single,
                &a[t * rows..(t + 1) * rows],
                &b[t * cols..(t + 1) * cols],
            );
        }
        for (x, y) in batched.iter().zip(&single) {
            assert!((x - y).abs() < 1e-12);
        }
        let mut g = vec![0.0; rows * cols];
        ger_acc(&mut g, &y, &x);
        assert!((g[3 * rows + 4] - y[4] * x[3]).abs() < 1e-15);
        assert!(all_finite(&g));
        g[7] = f64::NAN;
        assert!(!all_finite(&g));
        g[7] = f64::INFINITY;
        assert!(!all_finite(&g));
    }
}
