//! Hand-vectorised AVX2 kernels for `f32`, chosen at run time.
//!
//! Each kernel computes every output element with exactly the operations, in
//! exactly the order, of its portable twin in `scalar` (a multiply, then an
//! add, never fused; the same lane split and reduction tree for dot products),
//! so results are bit-identical on machines with and without AVX2. Tests below
//! check this on random shapes.

use std::arch::x86_64::*;

/// A set of hand-vectorised kernels, bit-identical to the portable ones
/// (`gemv_acc`, `gemv_t_acc` and `ger_batch` in `scalar`, which dispatch to
/// them).
pub struct Kernels<S: 'static> {
    /// `out += W x`.
    pub gemv_acc: unsafe fn(&mut [S], &[S], &[S]),
    /// `out += Wᵀ y`, for `y` a whole number of 8-lane registers long.
    pub gemv_t_acc: unsafe fn(&mut [S], &[S], &[S]),
    /// `W += Σ_t a_t b_tᵀ`.
    #[allow(clippy::type_complexity)]
    pub ger_batch: unsafe fn(&mut [S], usize, &[S], usize, usize, &[S], usize, usize, usize),
}

/// The AVX2 kernel set (valid only where the CPU reports AVX2).
pub static AVX2: Kernels<f32> = Kernels {
    gemv_acc,
    gemv_t_acc,
    ger_batch,
};

/// Sum of the eight lanes as `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`, the portable tree.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)))
}

/// `out += W x`, `W` column-major with `out.len()` rows.
///
/// # Safety
/// The CPU must support AVX2. Shapes are checked.
#[target_feature(enable = "avx2")]
unsafe fn gemv_acc(out: &mut [f32], w: &[f32], x: &[f32]) {
    let rows = out.len();
    let cols = x.len();
    assert_eq!(w.len(), rows * cols, "gemv_acc: W does not match out and x");
    let (o, wp) = (out.as_mut_ptr(), w.as_ptr());
    let mut r0 = 0;
    // SAFETY (all pointer arithmetic below): r0 + block <= rows and j < cols, so
    // every offset j * rows + r0 + k stays below rows * cols = w.len().
    unsafe {
        while r0 + 64 <= rows {
            let mut acc = [_mm256_setzero_ps(); 8];
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(o.add(r0 + 8 * k));
            }
            for (j, &xj) in x.iter().enumerate() {
                let xv = _mm256_set1_ps(xj);
                let c = wp.add(j * rows + r0);
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(_mm256_loadu_ps(c.add(8 * k)), xv));
                }
            }
            for (k, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(o.add(r0 + 8 * k), *a);
            }
            r0 += 64;
        }
        while r0 + 32 <= rows {
            let mut acc = [_mm256_setzero_ps(); 4];
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(o.add(r0 + 8 * k));
            }
            for (j, &xj) in x.iter().enumerate() {
                let xv = _mm256_set1_ps(xj);
                let c = wp.add(j * rows + r0);
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(_mm256_loadu_ps(c.add(8 * k)), xv));
                }
            }
            for (k, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(o.add(r0 + 8 * k), *a);
            }
            r0 += 32;
        }
        while r0 + 8 <= rows {
            let mut a = _mm256_loadu_ps(o.add(r0));
            for (j, &xj) in x.iter().enumerate() {
                a = _mm256_add_ps(
                    a,
                    _mm256_mul_ps(_mm256_loadu_ps(wp.add(j * rows + r0)), _mm256_set1_ps(xj)),
                );
            }
            _mm256_storeu_ps(o.add(r0), a);
            r0 += 8;
        }
    }
    for r in r0..rows {
        let mut acc = out[r];
        for (j, &xj) in x.iter().enumerate() {
            acc += w[j * rows + r] * xj;
        }
        out[r] = acc;
    }
}

/// `out[j] += dot(W[:, j], y)`, `W` column-major with `y.len()` rows.
///
/// # Safety
/// The CPU must support AVX2. Shapes are checked.
#[target_feature(enable = "avx2")]
unsafe fn gemv_t_acc(out: &mut [f32], w: &[f32], y: &[f32]) {
    let rows = y.len();
    let cols = out.len();
    assert_eq!(
        w.len(),
        rows * cols,
        "gemv_t_acc: W does not match out and y"
    );
    assert!(
        rows.is_multiple_of(8),
        "gemv_t_acc: {rows} rows, not whole registers (the dispatch takes those)"
    );
    let (wp, yp) = (w.as_ptr(), y.as_ptr());
    let whole = cols / 4 * 4;
    // SAFETY: i + 8 <= rows and j < cols keep j * rows + i + 8 <= w.len().
    unsafe {
        for j0 in (0..whole).step_by(4) {
            let mut acc = [_mm256_setzero_ps(); 4];
            for i in (0..rows).step_by(8) {
                let yv = _mm256_loadu_ps(yp.add(i));
                for (c, a) in acc.iter_mut().enumerate() {
                    let wv = _mm256_loadu_ps(wp.add((j0 + c) * rows + i));
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(wv, yv));
                }
            }
            for (c, a) in acc.iter().enumerate() {
                out[j0 + c] += hsum(*a);
            }
        }
        for (j, o) in out.iter_mut().enumerate().skip(whole) {
            let mut a = _mm256_setzero_ps();
            for i in (0..rows).step_by(8) {
                a = _mm256_add_ps(
                    a,
                    _mm256_mul_ps(
                        _mm256_loadu_ps(wp.add(j * rows + i)),
                        _mm256_loadu_ps(yp.add(i)),
                    ),
                );
            }
            *o += hsum(a);
        }
    }
}

/// `W += Σ_t a_t b_tᵀ` (see `scalar::ger_batch` for the operands).
///
/// # Safety
/// The CPU must support AVX2. Shapes are checked.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
unsafe fn ger_batch(
    w: &mut [f32],
    rows: usize,
    a: &[f32],
    a_stride: usize,
    a_off: usize,
    b: &[f32],
    b_stride: usize,
    b_off: usize,
    steps: usize,
) {
    let cols = w.len() / rows;
    assert_eq!(w.len(), rows * cols, "ger_batch: W is not rows x cols");
    if steps == 0 {
        return;
    }
    assert!(
        a.len() >= (steps - 1) * a_stride + a_off + rows,
        "ger_batch: a too short"
    );
    assert!(
        b.len() >= (steps - 1) * b_stride + b_off + cols,
        "ger_batch: b too short"
    );
    let whole = cols / 4 * 4;
    let (wp, ap) = (w.as_mut_ptr(), a.as_ptr());
    let mut r_done = 0;
    // SAFETY: r0 + 16 <= rows, j < cols and t < steps keep every offset inside
    // the lengths asserted above.
    unsafe {
        for j0 in (0..whole).step_by(4) {
            let mut r0 = 0;
            while r0 + 16 <= rows {
                let mut acc = [[_mm256_setzero_ps(); 2]; 4];
                for (c, pair) in acc.iter_mut().enumerate() {
                    let col = wp.add((j0 + c) * rows + r0);
                    pair[0] = _mm256_loadu_ps(col);
                    pair[1] = _mm256_loadu_ps(col.add(8));
                }
                for t in 0..steps {
                    let at = ap.add(t * a_stride + a_off + r0);
                    let (lo, hi) = (_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8)));
                    let bt = t * b_stride + b_off + j0;
                    for (c, pair) in acc.iter_mut().enumerate() {
                        let bv = _mm256_set1_ps(*b.get_unchecked(bt + c));
                        pair[0] = _mm256_add_ps(pair[0], _mm256_mul_ps(lo, bv));
                        pair[1] = _mm256_add_ps(pair[1], _mm256_mul_ps(hi, bv));
                    }
                }
                for (c, pair) in acc.iter().enumerate() {
                    let col = wp.add((j0 + c) * rows + r0);
                    _mm256_storeu_ps(col, pair[0]);
                    _mm256_storeu_ps(col.add(8), pair[1]);
                }
                r0 += 16;
            }
            r_done = r0;
        }
    }
    // Rows past the 16-row blocks of the first `whole` columns, and the other columns.
    for j in 0..cols {
        let start = if j < whole { r_done } else { 0 };
        for r in start..rows {
            let mut acc = w[j * rows + r];
            for t in 0..steps {
                acc += a[t * a_stride + a_off + r] * b[t * b_stride + b_off + j];
            }
            w[j * rows + r] = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rng::Rng;
    use crate::model::scalar;

    fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    #[test]
    fn avx2_kernels_are_bit_identical_to_the_portable_ones() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: nothing to compare");
            return;
        }
        let mut rng = Rng::new(5);
        for &(rows, cols) in &[
            (128, 32),
            (96, 32),
            (32, 32),
            (128, 1),
            (37, 5),
            (8, 3),
            (200, 7),
            (5, 9),
            (64, 64),
        ] {
            let w = random(&mut rng, rows * cols);
            let x = random(&mut rng, cols);
            let y = random(&mut rng, rows);

            let mut fast = random(&mut rng, rows);
            let mut slow = fast.clone();
            unsafe { gemv_acc(&mut fast, &w, &x) };
            scalar::gemv_acc_portable(&mut slow, &w, &x);
            assert_eq!(bits(&fast), bits(&slow), "gemv_acc {rows}x{cols}");

            let mut fast = random(&mut rng, cols);
            let mut slow = fast.clone();
            // Through the dispatch: the vector kernel takes whole registers of rows.
            scalar::gemv_t_acc(&mut fast, &w, &y);
            scalar::gemv_t_acc_portable(&mut slow, &w, &y);
            assert_eq!(bits(&fast), bits(&slow), "gemv_t_acc {rows}x{cols}");

            let steps = 1 + (rows + cols) % 17;
            let a = random(&mut rng, steps * (rows + 3));
            let b = random(&mut rng, steps * (cols + 2));
            let mut fast = w.clone();
            let mut slow = w.clone();
            unsafe { ger_batch(&mut fast, rows, &a, rows + 3, 1, &b, cols + 2, 2, steps) };
            scalar::ger_batch_portable(&mut slow, rows, &a, rows + 3, 1, &b, cols + 2, 2, steps);
            assert_eq!(
                bits(&fast),
                bits(&slow),
                "ger_batch {rows}x{cols}, {steps} steps"
            );
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }
}
