//! The learner learns: on synthetic streams its online error beats the naive
//! forecast by a wide margin, for every cell, with the default settings.

use recur::model::{CellKind, Forecaster, ModelConfig};
use recur::synth::{Ar2, NoisySine};

/// Online MSE of the model and of the naive last value over events `from..to`.
fn online_mse(cell: CellKind, series: &[f64], from: usize, to: usize) -> (f64, f64) {
    let cfg = ModelConfig {
        cell,
        ..ModelConfig::default()
    };
    let mut f = Forecaster::<f32>::new(cfg).unwrap();
    let (mut model, mut naive, mut n) = (0.0, 0.0, 0usize);
    for (t, &x) in series[..to].iter().enumerate() {
        let obs = f.observe("s", &[x as f32]).unwrap();
        if t >= from {
            assert_eq!(obs.errors.step1_n, 1);
            model += obs.errors.step1_sq;
            naive += obs.errors.naive_sq;
            n += 1;
        }
    }
    (model / n as f64, naive / n as f64)
}

fn check(name: &str, series: &[f64]) {
    for cell in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn] {
        let (model, naive) = online_mse(cell, series, 4000, 5000);
        eprintln!(
            "{name} {}: online MSE {model:.5}, naive {naive:.5}, ratio {:.3}",
            cell.name(),
            model / naive
        );
        assert!(
            model <= 0.5 * naive,
            "{name} {}: online MSE {model} is not at most half the naive MSE {naive}",
            cell.name()
        );
    }
}

#[test]
fn beats_naive_on_a_noisy_sine() {
    let series: Vec<f64> = NoisySine::new(24.0, 0.1, 7).take(5000).collect();
    check("sine", &series);
}

#[test]
fn beats_naive_on_an_ar2_process() {
    // Complex roots of modulus 0.95: a damped oscillation the last value cannot follow.
    let series: Vec<f64> = Ar2::new(1.5, -0.9025, 1.0, 11).take(5000).collect();
    check("ar2", &series);
}
