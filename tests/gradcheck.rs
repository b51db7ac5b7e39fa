//! Finite-difference checks of the hand-written BPTT in f64: random shapes,
//! windows up to 20 steps, stacked layers, both loss placements, every
//! parameter, the inputs and the initial state.

use recur::model::loss::Loss;
use recur::model::network::Tape;
use recur::model::rng::Rng;
use recur::model::{CellKind, Dims, ParamLayout, Params};

struct Problem {
    layout: ParamLayout,
    xs: Vec<f64>,
    init: Vec<f64>,
    targets: Vec<f64>,
    t: usize,
    first: usize,
    loss: Loss,
}

impl Problem {
    fn loss(&self, p: &Params<f64>, xs: &[f64], init: &[f64]) -> f64 {
        self.run(p, xs, init, None)
    }

    /// Loss, and when `grads` is given, the analytic gradients (params, x, init).
    fn run(
        &self,
        p: &Params<f64>,
        xs: &[f64],
        init: &[f64],
        grads: Option<(&mut Params<f64>, &mut [f64], &mut [f64])>,
    ) -> f64 {
        let o = self.layout.dims.outputs;
        let mut tape = Tape::new(self.layout.dims, self.t);
        tape.forward(&self.layout, p, xs, init);
        let count = (self.t - self.first) * o;
        let mut dys = vec![0.0; count];
        let mut y = vec![0.0; o];
        let mut loss = 0.0;
        for (row, t) in (self.first..self.t).enumerate() {
            tape.head(&self.layout, p, t + 1, &mut y);
            loss += self.loss.accumulate(
                &y,
                &self.targets[t * o..(t + 1) * o],
                count,
                &mut dys[row * o..(row + 1) * o],
            );
        }
        if let Some((g, dx, dinit)) = grads {
            tape.backward(&self.layout, p, xs, &dys, g, Some(dx), dinit);
        }
        loss
    }
}

fn close(what: &str, analytic: f64, numeric: f64) -> Result<(), String> {
    let err = (analytic - numeric).abs() / (1e-6f64).max(analytic.abs().max(numeric.abs()));
    if err > 2e-5 && (analytic - numeric).abs() > 1e-8 {
        Err(format!(
            "{what}: analytic {analytic:e}, numeric {numeric:e}"
        ))
    } else {
        Ok(())
    }
}

fn check(cell: CellKind, seed: u64) -> Result<usize, String> {
    let mut rng = Rng::new(seed);
    let mut pick = |lo: usize, hi: usize| lo + rng.below((hi - lo + 1) as u64) as usize;
    let dims = Dims {
        cell,
        inputs: pick(1, 4),
        hidden: pick(1, 6),
        layers: pick(1, 3),
        outputs: pick(1, 3),
    };
    let t = pick(1, 20);
    let last_only = pick(0, 1) == 1;
    let huber = pick(0, 1) == 1;
    let layout = ParamLayout::new(dims);
    let mut rng = Rng::new(seed ^ 0xABCD);
    let params = Params::<f64>::init(&layout, &mut rng);
    let mut normal = |n: usize| (0..n).map(|_| rng.normal()).collect::<Vec<f64>>();
    let problem = Problem {
        xs: normal(t * dims.inputs),
        init: normal(dims.state_len()).iter().map(|v| 0.5 * v).collect(),
        targets: normal(t * dims.outputs),
        t,
        first: if last_only { t - 1 } else { 0 },
        loss: if huber {
            Loss::Huber { delta: 0.5 }
        } else {
            Loss::Mse
        },
        layout,
    };
    let mut g = Params::zeros(&problem.layout);
    let mut dx = vec![0.0; problem.xs.len()];
    let mut dinit = vec![0.0; problem.init.len()];
    problem.run(
        &params,
        &problem.xs,
        &problem.init,
        Some((&mut g, &mut dx, &mut dinit)),
    );

    let h = 1e-6;
    let tag = format!(
        "{} {dims:?} T={t} last_only={last_only} huber={huber}",
        cell.name()
    );
    let mut checked = 0;
    for i in 0..params.data.len() {
        let (mut plus, mut minus) = (params.clone(), params.clone());
        plus.data[i] += h;
        minus.data[i] -= h;
        let num = (problem.loss(&plus, &problem.xs, &problem.init)
            - problem.loss(&minus, &problem.xs, &problem.init))
            / (2.0 * h);
        close(&format!("{tag}: param {i}"), g.data[i], num)?;
        checked += 1;
    }
    for i in 0..problem.xs.len() {
        let (mut plus, mut minus) = (problem.xs.clone(), problem.xs.clone());
        plus[i] += h;
        minus[i] -= h;
        let num = (problem.loss(&params, &plus, &problem.init)
            - problem.loss(&params, &minus, &problem.init))
            / (2.0 * h);
        close(&format!("{tag}: x {i}"), dx[i], num)?;
        checked += 1;
    }
    for i in 0..problem.init.len() {
        let (mut plus, mut minus) = (problem.init.clone(), problem.init.clone());
        plus[i] += h;
        minus[i] -= h;
        let num = (problem.loss(&params, &problem.xs, &plus)
            - problem.loss(&params, &problem.xs, &minus))
            / (2.0 * h);
        close(&format!("{tag}: initial state {i}"), dinit[i], num)?;
        checked += 1;
    }
    Ok(checked)
}

fn run_cell(cell: CellKind) {
    let mut total = 0;
    for seed in 0..12 {
        total += check(cell, 1000 * seed + 17).unwrap_or_else(|e| panic!("{e}"));
    }
    eprintln!(
        "{}: {total} derivatives match finite differences",
        cell.name()
    );
}

#[test]
fn lstm_gradients_match_finite_differences() {
    run_cell(CellKind::Lstm);
}

#[test]
fn gru_gradients_match_finite_differences() {
    run_cell(CellKind::Gru);
}

#[test]
fn rnn_gradients_match_finite_differences() {
    run_cell(CellKind::Rnn);
}

#[test]
fn stacked_windows_of_twenty_steps_are_covered() {
    // The random draws above must reach the hard cases this test is named for.
    let mut saw = (false, false);
    for seed in 0..12u64 {
        let mut rng = Rng::new(1000 * seed + 17);
        let mut pick = |lo: usize, hi: usize| lo + rng.below((hi - lo + 1) as u64) as usize;
        let (_, _, layers, _, t) = (pick(1, 4), pick(1, 6), pick(1, 3), pick(1, 3), pick(1, 20));
        saw.0 |= layers >= 2;
        saw.1 |= t >= 15;
    }
    assert!(
        saw.0 && saw.1,
        "random shapes never drew stacked layers and long windows: {saw:?}"
    );
}
