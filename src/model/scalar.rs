//! The floating-point element type and the few dense kernels the cells need.
//!
//! The model is generic over [`Scalar`]: `f32` on the live path, `f64` for the
//! reference checks against PyTorch. Matrices are stored column-major (each
//! column of `W` contiguous), so a mat-vec is a sequence of contiguous `axpy`s
//! and a transposed mat-vec a sequence of contiguous dot products. Every
//! reduction here accumulates into a fixed number of lanes and combines them in
//! a fixed order: the result depends only on the inputs, never on the CPU's
//! vector width, which keeps runs bit-identical while letting LLVM vectorise.

use std::fmt::{Debug, Display};
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

use num_traits::Float;

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
    fn sigmoid_inplace(xs: &mut [Self]) {
        for x in xs {
            *x = 1.0 / (1.0 + (-*x).exp());
        }
    }
    fn tanh_inplace(xs: &mut [Self]) {
        for x in xs {
            *x = x.tanh();
        }
    }
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
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self as f64
    }
    fn sigmoid_inplace(xs: &mut [Self]) {
        for x in xs {
            *x = 1.0 / (1.0 + exp_f32(-*x));
        }
    }
    fn tanh_inplace(xs: &mut [Self]) {
        for x in xs {
            *x = tanh_f32(*x);
        }
    }
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
        + 5.000_000_1e-1;
    let p = p * r * r + r + 1.0;
    f32::from_bits(((ni + 127) << 23) as u32) * p
}

/// `tanh` for `f32` via [`exp_f32`]; absolute error below 2e-7.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    1.0 - 2.0 / (1.0 + exp_f32(2.0 * x))
}

/// `out += W x` for a column-major `W` with `out.len()` rows and `x.len()` columns.
#[inline]
pub fn gemv_acc<S: Scalar>(out: &mut [S], w: &[S], x: &[S]) {
    let rows = out.len();
    debug_assert_eq!(w.len(), rows * x.len());
    let blocks = rows / LANES;
    for b in 0..blocks {
        let r0 = b * LANES;
        let mut acc = [S::zero(); LANES];
        acc.copy_from_slice(&out[r0..r0 + LANES]);
        for (j, &xj) in x.iter().enumerate() {
            let col = &w[j * rows + r0..j * rows + r0 + LANES];
            for k in 0..LANES {
                acc[k] += col[k] * xj;
            }
        }
        out[r0..r0 + LANES].copy_from_slice(&acc);
    }
    let r0 = blocks * LANES;
    if r0 < rows {
        for (j, &xj) in x.iter().enumerate() {
            let col = &w[j * rows..(j + 1) * rows];
            for r in r0..rows {
                out[r] += col[r] * xj;
            }
        }
    }
}

/// Dot product with a fixed lane structure (see the module docs).
#[inline]
pub fn dot<S: Scalar>(a: &[S], b: &[S]) -> S {
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
            acc[k] = acc[k] + acc[k + width];
        }
    }
    acc[0]
}

/// `out[j] += dot(W[:, j], y)`: adds `Wᵀ y` for a column-major `W` with `y.len()` rows.
#[inline]
pub fn gemv_t_acc<S: Scalar>(out: &mut [S], w: &[S], y: &[S]) {
    let rows = y.len();
    debug_assert_eq!(w.len(), rows * out.len());
    for (j, o) in out.iter_mut().enumerate() {
        *o += dot(&w[j * rows..(j + 1) * rows], y);
    }
}

/// Rank-one update `W += a bᵀ` for a column-major `W` with `a.len()` rows.
#[inline]
pub fn ger_acc<S: Scalar>(w: &mut [S], a: &[S], b: &[S]) {
    let rows = a.len();
    debug_assert_eq!(w.len(), rows * b.len());
    for (j, &bj) in b.iter().enumerate() {
        axpy(&mut w[j * rows..(j + 1) * rows], bj, a);
    }
}

/// `y += alpha x`.
#[inline]
pub fn axpy<S: Scalar>(y: &mut [S], alpha: S, x: &[S]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `y += x`.
#[inline]
pub fn add_assign<S: Scalar>(y: &mut [S], x: &[S]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += xi;
    }
}

/// Sum of squares with the same fixed lane structure as [`dot`].
#[inline]
pub fn sum_sq<S: Scalar>(a: &[S]) -> S {
    dot(a, a)
}

/// True when every element is finite.
#[inline]
pub fn all_finite<S: Scalar>(a: &[S]) -> bool {
    // Summing `x * 0` is NaN iff some x is NaN or infinite, and vectorises.
    let mut acc = S::zero();
    for &x in a {
        acc += x * S::zero();
    }
    acc == S::zero()
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
