//! Criterion benches of the model's hot paths (f32, one event at a time):
//! a single cell step, a TBPTT(16) update, and a whole `observe` with learning on.
//!
//! The first two call the kernels directly, so they measure the portable
//! (baseline x86-64) build; `observe` is the production path, which runs the
//! AVX2 build where the CPU has it.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use recur::model::network::{StepScratch, Tape, step};
use recur::model::optim::{Optimizer, OptimizerConfig, Spare, clip_grad_norm};
use recur::model::rng::Rng;
use recur::model::{CellKind, Dims, Forecaster, ModelConfig, ParamLayout, Params};

const CELLS: [CellKind; 3] = [CellKind::Lstm, CellKind::Gru, CellKind::Rnn];

fn dims(cell: CellKind) -> Dims {
    Dims {
        cell,
        inputs: 1,
        hidden: 32,
        layers: 1,
        outputs: 1,
    }
}

fn cell_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("cell_step_h32_portable");
    for cell in CELLS {
        let layout = ParamLayout::new(dims(cell));
        let params = Params::<f32>::init(&layout, &mut Rng::new(1));
        let mut state = vec![0.0f32; layout.dims.state_len()];
        let mut scratch = StepScratch::new(&layout.dims);
        g.bench_function(BenchmarkId::from_parameter(cell.name()), |b| {
            b.iter(|| {
                step(
                    &layout,
                    &params,
                    std::hint::black_box(&[0.3]),
                    &mut state,
                    &mut scratch,
                )
            })
        });
    }
    g.finish();
}

fn tbptt_update(c: &mut Criterion) {
    let mut g = c.benchmark_group("tbptt16_adam_h32_portable");
    for cell in CELLS {
        let layout = ParamLayout::new(dims(cell));
        let mut params = Params::<f32>::init(&layout, &mut Rng::new(1));
        let mut grads = Params::zeros(&layout);
        let mut opt = Optimizer::new(OptimizerConfig::default(), &layout);
        let mut spare = Spare::new(OptimizerConfig::default(), &layout);
        let mut tape = Tape::new(layout.dims, 16);
        let xs: Vec<f32> = (0..16).map(|t| (t as f32 * 0.4).sin()).collect();
        let init = vec![0.0f32; layout.dims.state_len()];
        let mut d_init = init.clone();
        let mut y = [0.0f32];
        g.bench_function(BenchmarkId::from_parameter(cell.name()), |b| {
            b.iter(|| {
                tape.forward(&layout, &params, &xs, &init);
                tape.head(&layout, &params, 16, &mut y);
                let dy = [2.0 * (y[0] - 0.5)];
                grads.fill_zero();
                tape.backward(&layout, &params, &xs, &dy, &mut grads, None, &mut d_init);
                clip_grad_norm(&mut grads, 1.0);
                opt.update(&mut params, &mut grads, &mut spare);
            })
        });
    }
    g.finish();
}

fn observe(c: &mut Criterion) {
    let mut g = c.benchmark_group("observe_learning_h32");
    for cell in CELLS {
        let mut f = Forecaster::<f32>::new(ModelConfig {
            cell,
            ..ModelConfig::default()
        })
        .unwrap();
        let keys: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
        let mut i = 0usize;
        g.bench_function(BenchmarkId::from_parameter(cell.name()), |b| {
            b.iter(|| {
                i += 1;
                let x = ((i / 100) as f32 * 0.26).sin();
                f.observe(&keys[i % 100], &[x])
                    .map(|o| o.forecast[0])
                    .unwrap_or(0.0)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, cell_step, tbptt_update, observe);
criterion_main!(benches);
