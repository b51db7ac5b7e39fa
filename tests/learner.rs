//! Behaviour of the online learner: determinism, no look-ahead, the non-finite
//! guard, weight scopes and checkpoints.

use recur::model::checkpoint::Reader;
use recur::model::learner::Learning;
use recur::model::{CellKind, Forecaster, LearnError, ModelConfig, WeightScope};
use recur::synth::{NoisySine, Seasonal};

fn events(n: usize, streams: usize) -> Vec<(String, f32)> {
    let mut gens: Vec<Seasonal> = (0..streams as u64).map(|s| Seasonal::new(s, 3)).collect();
    (0..n)
        .map(|i| {
            let s = i % streams;
            (format!("s{s}"), gens[s].next().unwrap() as f32)
        })
        .collect()
}

fn run(f: &mut Forecaster<f32>, evs: &[(String, f32)]) -> Vec<u32> {
    let mut bits = Vec::new();
    for (k, v) in evs {
        let obs = f.observe(k, &[*v]).unwrap();
        bits.extend(obs.forecast.iter().map(|x| x.to_bits()));
    }
    bits
}

#[test]
fn same_seed_same_events_give_bit_identical_forecasts() {
    let evs = events(3000, 5);
    for cell in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn] {
        let cfg = ModelConfig {
            cell,
            ..ModelConfig::default()
        };
        let a = run(&mut Forecaster::new(cfg.clone()).unwrap(), &evs);
        let b = run(&mut Forecaster::new(cfg.clone()).unwrap(), &evs);
        assert_eq!(a, b, "{}: two runs differ", cell.name());
        let other = run(
            &mut Forecaster::new(ModelConfig { seed: 7, ..cfg }).unwrap(),
            &evs,
        );
        assert_ne!(a, other, "{}: the seed has no effect", cell.name());
    }
}

#[test]
fn vectorised_and_portable_paths_agree_bit_for_bit() {
    let evs = events(2000, 3);
    for cell in [
        CellKind::Lstm,
        CellKind::Gru,
        CellKind::Rnn,
        CellKind::RnnRelu,
    ] {
        let cfg = ModelConfig {
            cell,
            layers: 2,
            hidden: 24,
            ..ModelConfig::default()
        };
        let mut fast = Forecaster::<f32>::new(cfg.clone()).unwrap();
        let mut portable = Forecaster::<f32>::new(cfg).unwrap();
        for (k, v) in &evs {
            let a: Vec<u32> = fast
                .observe(k, &[*v])
                .unwrap()
                .forecast
                .iter()
                .map(|x| x.to_bits())
                .collect();
            let b: Vec<u32> = portable
                .observe_portable(k, &[*v])
                .unwrap()
                .forecast
                .iter()
                .map(|x| x.to_bits())
                .collect();
            assert_eq!(a, b, "{}: dispatch changed the numbers", cell.name());
        }
    }
}

#[test]
fn forecasts_are_learned_from_only_once_all_targets_are_observed() {
    for horizon in [1usize, 3, 8] {
        let cfg = ModelConfig {
            horizon,
            tbptt: 5,
            ..ModelConfig::default()
        };
        let mut f = Forecaster::<f32>::new(cfg).unwrap();
        for (t, x) in NoisySine::new(12.0, 0.05, 1).take(60).enumerate() {
            let obs = f.observe("s", &[x as f32]).unwrap();
            assert_eq!(obs.forecast.len(), horizon);
            // The forecast made after event j covers events j+1 ..= j+H, so the
            // first one is complete, and first learned from, at event H.
            let expected = (t + 1).saturating_sub(horizon) as u64;
            assert_eq!(obs.model_version, expected, "horizon {horizon}, event {t}");
            assert_eq!(obs.loss.is_some(), t >= horizon);
        }
    }
}

/// Levels forecast in raw units (no normaliser): a value of 3e30 reaches
/// the f32 loss as it is, and overflows it.
fn raw_levels() -> ModelConfig {
    ModelConfig {
        normalize: recur::model::Normalize::None,
        predict: recur::model::Predict::Level,
        ..ModelConfig::default()
    }
}

#[test]
fn non_finite_values_never_reach_the_weights() {
    let cfg = raw_levels();
    let mut f = Forecaster::<f32>::new(cfg).unwrap();
    for x in NoisySine::new(12.0, 0.1, 3).take(50) {
        f.observe("s", &[x as f32]).unwrap();
    }
    let before = f.shared().params.clone();
    let err = f.observe("s", &[f32::NAN]).unwrap_err();
    assert!(
        matches!(err, LearnError::NonFinite { index: 0, .. }),
        "{err:?}"
    );
    assert_eq!(f.shared().params, before);
    assert_eq!(f.stats().nonfinite, 1);
    assert_eq!(f.stream("s").unwrap().seen, 0, "state was not reset");
    assert!(f.observe("s", &[f32::INFINITY]).is_err());
    assert_eq!(f.stats().nonfinite, 2);

    // A finite but enormous value makes the f32 loss overflow: the update is skipped.
    for x in NoisySine::new(12.0, 0.1, 4).take(20) {
        f.observe("s", &[x as f32]).unwrap();
    }
    let before = f.shared().params.clone();
    let obs = f.observe("s", &[3e30]).unwrap();
    assert!(obs.reset && obs.loss.is_none());
    assert!(obs.forecast.iter().all(|v| v.is_finite()));
    assert_eq!(f.shared().params, before);
    assert_eq!(f.stats().nonfinite, 3);
    assert!(f.shared().params.data.iter().all(|v| v.is_finite()));
    // And the stream carries on.
    for x in NoisySine::new(12.0, 0.1, 5).take(20) {
        assert!(f.observe("s", &[x as f32]).unwrap().forecast[0].is_finite());
    }
}

#[test]
fn an_event_whose_update_resets_the_stream_is_scored_against_the_state_it_clears() {
    // The event that overflows the loss resets the stream; its anomaly score
    // is of the calibration it met (far outside the stream's range and every
    // interval: 1), not of the cleared state (which has no score yet).
    let cfg = raw_levels();
    assert!(!cfg.intervals.is_empty(), "intervals are on by default");
    let mut f = Forecaster::<f32>::new(cfg).unwrap();
    for x in NoisySine::new(12.0, 0.1, 7).take(150) {
        f.observe("s", &[x as f32]).unwrap();
    }
    let obs = f.observe("s", &[3e30]).unwrap();
    assert!(obs.reset, "the overflowing update resets the stream");
    assert_eq!(obs.anomaly, Some(1.0));
    let (y, lo, hi) = (obs.forecast[0], obs.lower.to_vec(), obs.upper.to_vec());
    assert_eq!(lo.len(), 2);
    for (l, h) in lo.iter().zip(&hi) {
        assert!(
            l.is_finite() && h.is_finite() && *l <= y && y <= *h,
            "{l} {y} {h}"
        );
    }
    assert_eq!(
        f.stream("s").unwrap().seen,
        1,
        "the reset stream took this event in"
    );
}

#[test]
fn an_update_that_would_overflow_the_weights_is_rolled_back() {
    // A step size so large that a few Adam steps (each moves a weight by about
    // lr) carry the f32 weights past their range: finite gradients, infinite weights.
    let cfg = ModelConfig {
        optimizer: recur::model::OptimizerConfig {
            lr: 1e38,
            ..Default::default()
        },
        ..ModelConfig::default()
    };
    let mut f = Forecaster::<f32>::new(cfg).unwrap();
    for x in NoisySine::new(12.0, 0.1, 6).take(40) {
        f.observe("s", &[x as f32]).unwrap();
    }
    let stats = f.stats();
    assert!(stats.rollbacks > 0, "{stats:?}");
    assert!(f.shared().params.data.iter().all(|v| v.is_finite()));
    assert!(f.shared().optimizer.v.data.iter().all(|v| v.is_finite()));
    // So every checkpoint holds finite weights and loads again.
    let bytes = f.to_safetensors();
    let back = Forecaster::<f32>::from_safetensors(&bytes).unwrap();
    assert_eq!(back.shared().params, f.shared().params);
}

#[test]
fn a_checkpoint_with_a_non_finite_weight_is_refused() {
    let mut f = Forecaster::<f32>::new(ModelConfig::default()).unwrap();
    f.shared_mut().params.data[3] = f32::NAN;
    let err = Forecaster::<f32>::from_safetensors(&f.to_safetensors()).unwrap_err();
    assert!(
        err.to_string().contains("non-finite value at index 3"),
        "{err}"
    );
}

#[test]
fn weights_whose_meaning_differs_are_refused_naming_the_key() {
    // Same shapes, other equations: a tanh network's weights read by a ReLU
    // one, or a level head's read as changes, would load and forecast wrongly.
    let saved = Forecaster::<f32>::new(ModelConfig {
        cell: CellKind::Rnn,
        ..ModelConfig::default()
    })
    .unwrap()
    .to_safetensors();
    for (key, cfg) in [
        (
            "cell",
            ModelConfig {
                cell: CellKind::RnnRelu,
                ..ModelConfig::default()
            },
        ),
        (
            "predict",
            ModelConfig {
                cell: CellKind::Rnn,
                predict: recur::model::learner::Predict::Level,
                ..ModelConfig::default()
            },
        ),
    ] {
        let mut f = Forecaster::<f32>::new(cfg).unwrap();
        let before = f.shared().params.clone();
        let err = f
            .load_weights(&Reader::new(&saved).unwrap())
            .expect_err(key)
            .to_string();
        assert!(err.contains(key), "{err}");
        assert_eq!(f.shared().params, before, "nothing loaded");
    }
    // What does not change the weights' meaning loads.
    let mut off = Forecaster::<f32>::new(ModelConfig {
        cell: CellKind::Rnn,
        learning: Learning::Off,
        ..ModelConfig::default()
    })
    .unwrap();
    off.load_weights(&Reader::new(&saved).unwrap()).unwrap();
}

#[test]
fn a_wrong_width_is_an_error_that_changes_nothing() {
    let mut f = Forecaster::<f32>::new(ModelConfig {
        inputs: 3,
        targets: vec![2],
        horizon: 2,
        ..ModelConfig::default()
    })
    .unwrap();
    let err = f.observe("s", &[1.0, 2.0]).unwrap_err();
    assert_eq!(
        err,
        LearnError::Width {
            expected: 3,
            got: 2
        }
    );
    assert_eq!(f.stream_count(), 0);
    let obs = f.observe("s", &[1.0, 2.0, 3.0]).unwrap();
    assert_eq!(obs.forecast.len(), 2, "horizon 2 x 1 target");
}

#[test]
fn shared_weights_learn_from_every_stream_per_stream_weights_do_not_mix() {
    let evs = events(400, 2);
    let mut shared = Forecaster::<f32>::new(ModelConfig::default()).unwrap();
    run(&mut shared, &evs);
    assert_eq!(shared.shared().updates, shared.stats().updates);
    assert!(shared.stream("s0").unwrap().model.is_none());

    let cfg = ModelConfig {
        weight_scope: WeightScope::PerStream,
        ..ModelConfig::default()
    };
    let mut per = Forecaster::<f32>::new(cfg.clone()).unwrap();
    let init = per.shared().params.clone();
    run(&mut per, &evs);
    assert_eq!(
        per.shared().params,
        init,
        "the template weights must not learn"
    );
    let a = per.stream("s0").unwrap().model.as_ref().unwrap();
    let b = per.stream("s1").unwrap().model.as_ref().unwrap();
    assert_ne!(a.params, b.params);
    assert_eq!(a.updates + b.updates, per.stats().updates);

    // Stream s0 alone gives the same weights as s0 interleaved with s1.
    let mut alone = Forecaster::<f32>::new(cfg).unwrap();
    let only0: Vec<_> = evs.iter().filter(|e| e.0 == "s0").cloned().collect();
    run(&mut alone, &only0);
    assert_eq!(
        alone.stream("s0").unwrap().model.as_ref().unwrap().params,
        a.params
    );
}

#[test]
fn streams_sharing_weights_each_get_their_own_linear_dynamics() {
    // Two streams whose changes follow AR(1) with opposite signs: a linear
    // expert pooled over both learns a slope near zero (the naive forecast),
    // one per stream learns each sign. Ideal one-step MSE is 0.36 of naive's.
    let mut rng = recur::model::rng::Rng::new(11);
    let mut f = Forecaster::<f32>::new(ModelConfig::default()).unwrap();
    let (mut x, mut d) = ([0.0f64; 2], [0.0f64; 2]);
    let mut pending = [None::<f64>; 2];
    let (mut model, mut naive) = ([0.0; 2], [0.0; 2]);
    for t in 0..3000 {
        for s in 0..2 {
            let sign = if s == 0 { 0.8 } else { -0.8 };
            d[s] = sign * d[s] + rng.normal();
            let last = x[s];
            x[s] += d[s];
            if t >= 2000 {
                let err = pending[s].expect("a forecast") - x[s];
                model[s] += err * err;
                naive[s] += (last - x[s]) * (last - x[s]);
            }
            let obs = f.observe(&format!("s{s}"), &[x[s] as f32]).unwrap();
            pending[s] = Some(obs.forecast[0] as f64);
        }
    }
    for s in 0..2 {
        let ratio = model[s] / naive[s];
        assert!(ratio < 0.6, "stream s{s}: MSE {ratio:.3} of naive's");
    }
}

#[test]
fn streams_sharing_weights_under_fixed_scaling_get_their_own_least_squares_fit() {
    // A calm stream (AR(1) changes, steps of 0.05) beside a loud one (white
    // noise of 1): a covariance pooled over both is the loud stream's, and
    // the calm stream's own weights learned with it had a one-step MSE 1.84
    // times that of a separate RLS fit of the calm stream; from its own
    // increment sums it is that fit (1.0003). The blend is pinned to the
    // linear expert.
    let cfg = ModelConfig {
        normalize: recur::model::Normalize::None,
        stack: recur::model::stack::StackConfig {
            forgetting: 1.0,
            ridge: 1e12,
        },
        ..ModelConfig::default()
    };
    let (lin, lags) = (cfg.linear, cfg.linear_lags());
    let mut f = Forecaster::<f32>::new(cfg).unwrap();
    let mut own = recur::model::linear::Rls::new(lags, 1, lin.forgetting, lin.ridge);
    let mut rng = recur::model::rng::Rng::new(3);
    let (mut calm, mut d) = (Vec::<f64>::new(), 0.0);
    let features = |xs: &[f64], t: usize| -> Vec<f64> {
        let mut phi: Vec<f64> = (1..lags).rev().map(|i| xs[t - i] - xs[t]).collect();
        phi.push(1.0);
        phi
    };
    let (mut pending, mut reference) = (0.0f64, 0.0f64);
    let (mut model, mut separate) = (0.0, 0.0);
    for t in 0..4000 {
        d = 0.9 * d + 0.05 * rng.normal();
        let x = calm.last().copied().unwrap_or(0.0) + d;
        if t >= 3000 {
            model += (pending - x).powi(2);
            separate += (reference - x).powi(2);
        }
        calm.push(x);
        if t >= lags {
            // The window that ended one event ago has its target now.
            own.update(&features(&calm, t - 1), &[x - calm[t - 1]]);
        }
        if t + 1 >= lags {
            let mut out = [0.0];
            own.predict(&features(&calm, t), &mut out);
            reference = x + out[0];
        }
        pending = f.observe("calm", &[x as f32]).unwrap().forecast[0] as f64;
        f.observe("loud", &[rng.normal() as f32]).unwrap();
    }
    let ratio = model / separate;
    assert!(
        ratio < 1.005,
        "the calm stream's one-step MSE is {ratio:.4} of its own RLS fit's"
    );
}

#[test]
fn a_level_shift_of_ten_thousand_deviations_does_not_freeze_the_blend() {
    // Noise around a level, statistics frozen after 500 events, then the
    // level moves by 10⁴ standard deviations. Once the lags have passed the
    // shift the forecasts must again beat naive's, as they did before it.
    let cfg = ModelConfig {
        normalize: recur::model::Normalize::Warmup,
        normalize_events: 500,
        ..ModelConfig::default()
    };
    let mut f = Forecaster::<f32>::new(cfg).unwrap();
    let ratio = after_a_level_shift(&mut f, 1e4, false);
    assert!(
        ratio < 0.8,
        "MSE {ratio:.3} of naive's, 500 events after the shift"
    );
}

/// MSE of the default forecaster's `step`-ahead forecasts (horizon 24,
/// statistics frozen after `warmup` events) over events `from..events` of
/// `series(t, rng)`, as a multiple of seasonal naive's (the value a day,
/// 24 events, before the target).
fn step_mse_over_seasonal_naive(
    (warmup, seed): (u64, u64),
    (from, events): (usize, usize),
    step: usize,
    series: impl Fn(usize, &mut recur::model::rng::Rng) -> f64,
) -> f64 {
    let cfg = ModelConfig {
        normalize: recur::model::Normalize::Warmup,
        normalize_events: warmup,
        horizon: 24,
        ..ModelConfig::default()
    };
    let mut f = Forecaster::<f32>::new(cfg).unwrap();
    let mut rng = recur::model::rng::Rng::new(seed);
    let mut made = std::collections::VecDeque::<f64>::new();
    let (mut model, mut seasonal) = (0.0, 0.0);
    let mut xs = Vec::<f64>::new();
    for t in 0..events {
        let x = series(t, &mut rng);
        if t >= from {
            let ahead = made.pop_front().expect("a forecast `step` events old");
            model += (ahead - x).powi(2);
            seasonal += (xs[t - 24] - x).powi(2);
        }
        xs.push(x);
        let obs = f.observe("s", &[x as f32]).unwrap();
        if t + step >= from {
            made.push_back(f64::from(obs.forecast[step - 1]));
        }
    }
    model / seasonal
}

#[test]
fn a_seasonal_swing_that_outgrows_its_statistics_is_not_clipped() {
    // A daily swing (24 events) whose amplitude grows twentyfold over 5,000
    // events, statistics frozen after 500. Its day-ahead changes reach tens
    // of warm-up deviations: clipped at a fixed 10, the stacked experts saw
    // a fraction of each swing, and the day-ahead MSE over the last 1,000
    // events was 0.47 of seasonal naive's (0.39 with the bound following
    // the stream's change scale).
    let ratio = step_mse_over_seasonal_naive((500, 5), (4000, 5000), 24, |t, rng| {
        (t as f64 * 0.0006).exp()
            * (10.0 + 3.0 * (std::f64::consts::TAU * t as f64 / 24.0).sin())
            * (1.0 + 0.01 * rng.normal())
    });
    assert!(
        ratio < 0.43,
        "day-ahead MSE {ratio:.3} of seasonal naive's over the last 1,000 events"
    );
}

#[test]
fn a_swing_of_half_a_season_that_outgrows_its_statistics_is_not_clipped() {
    // A daily swing (24 events) whose amplitude grows thirteenfold over
    // 12,000 events, statistics frozen after 2,000. Its change over half a
    // day is twelve of its mean one-step changes: with one bound for changes
    // over any number of steps (ten one-step changes), every such change was
    // clipped, and the 12-step forecasts over the last 2,000 events had 42
    // times the MSE of seasonal naive's (the value a day before the target).
    let ratio = step_mse_over_seasonal_naive((2000, 7), (10_000, 12_000), 12, |t, rng| {
        let swing = 2.0 + (std::f64::consts::TAU * t as f64 / 24.0).sin();
        swing * (1.0 + 0.001 * t as f64) + 0.2 * rng.normal()
    });
    assert!(
        ratio < 1.0,
        "12-step MSE {ratio:.3} of seasonal naive's over the last 2,000 events"
    );
}

/// Standard deviation of a step of the random walk below.
const WALK_STEP: f64 = 0.1;

/// One-step MSE of the default forecaster over events 6,000..8,000 of a
/// daily profile of 24 random values plus a random walk of steps
/// [`WALK_STEP`].
fn next_change_is_the_change_a_day_before() -> f64 {
    let cfg = ModelConfig {
        normalize: recur::model::Normalize::Warmup,
        normalize_events: 2000,
        ..ModelConfig::default()
    };
    let mut f = Forecaster::<f32>::new(cfg).unwrap();
    let mut rng = recur::model::rng::Rng::new(11);
    let profile: Vec<f64> = (0..24).map(|_| rng.normal()).collect();
    let (mut walk, mut pending, mut model) = (0.0, None::<f64>, 0.0);
    for t in 0..8000 {
        walk += WALK_STEP * rng.normal();
        let x = profile[t % 24] + walk;
        if t >= 6000 {
            model += (pending.expect("a forecast") - x).powi(2);
        }
        pending = Some(f64::from(f.observe("s", &[x as f32]).unwrap().forecast[0]));
    }
    model / 2000.0
}

#[test]
fn a_change_that_repeats_daily_is_forecast_from_the_day_before() {
    // The next change is the change at the same phase a day earlier,
    // x_{t−23} − x_{t−24}, plus the walk's step: the one-step MSE can be
    // about twice the step's variance (both changes carry one). A window of
    // 24 rows (x_t … x_{t−23}) does not reach x_{t−24}: the best it has is
    // the profile's change over the 23 steps it sees, which carries 23 steps
    // of the walk: with `lags = 24` the MSE was 0.144, 14 times the
    // variance (25 rows: 0.019).
    let mse = next_change_is_the_change_a_day_before();
    let variance = WALK_STEP * WALK_STEP;
    assert!(
        mse < 3.0 * variance,
        "one-step MSE {mse:.4}, step variance {variance}"
    );
}

/// One-step MSE of the forecasts of `f` over events 1,500..3,000 as a
/// multiple of naive's, on noise around a level that moves by `shift` at
/// event 1,000 (and, with `spikes`, single events 500 deviations off every 97).
fn after_a_level_shift(f: &mut Forecaster<f32>, shift: f64, spikes: bool) -> f64 {
    let mut rng = recur::model::rng::Rng::new(1);
    let (mut pending, mut last) = (None::<f64>, 0.0);
    let (mut model, mut naive) = (0.0, 0.0);
    for t in 0..3000 {
        let spike = if spikes && t % 97 == 0 { 500.0 } else { 0.0 };
        let x = if t < 1000 { 0.0 } else { shift } + rng.normal() + spike;
        if t >= 1500 {
            model += (pending.expect("a forecast") - x).powi(2);
            naive += (last - x).powi(2);
        }
        let obs = f.observe("s", &[x as f32]).unwrap();
        pending = Some(obs.forecast[0] as f64);
        last = x;
    }
    model / naive
}

#[test]
fn under_running_statistics_a_level_shift_of_a_thousand_deviations_is_absorbed() {
    // Running statistics never forget: without a restart the stream's scale
    // stays near half the shift and the forecasts were 15 times naive's MSE
    // (1,000σ) and 1,900 times (10⁴σ) long after it.
    for shift in [1e3, 1e4] {
        let mut f = Forecaster::<f32>::new(ModelConfig::default()).unwrap();
        let ratio = after_a_level_shift(&mut f, shift, false);
        assert!(
            ratio < 0.8,
            "shift {shift}: MSE {ratio:.3} of naive's, 500 events after it"
        );
        assert_eq!(f.stats().level_shifts, 1, "shift {shift}");
    }
}

#[test]
fn spikes_and_small_shifts_do_not_restart_the_running_statistics() {
    // Single events 500 deviations off, and a shift of 40 deviations (as
    // ETTh2's LULL has): the running statistics stay.
    for shift in [5.0, 40.0] {
        let mut f = Forecaster::<f32>::new(ModelConfig::default()).unwrap();
        after_a_level_shift(&mut f, shift, true);
        assert_eq!(f.stats().level_shifts, 0, "shift {shift}");
    }
}

#[test]
fn values_at_the_edge_of_f32_never_leave_the_intervals_broken() {
    // Finite inputs whose residual does not fit in f32: the calibration
    // must skip them, not turn into inf and then NaN for good.
    for learning in [Learning::On, Learning::Off] {
        let cfg = ModelConfig {
            learning,
            ..ModelConfig::default()
        };
        let mut f = Forecaster::<f32>::new(cfg).unwrap();
        for i in 0..50 {
            f.observe("s", &[(i % 7) as f32]).unwrap();
        }
        for v in [f32::MAX, -f32::MAX] {
            let obs = f.observe("s", &[v]).unwrap();
            assert!(
                obs.forecast.iter().all(|x| x.is_finite()),
                "learning {learning:?}: forecast {:?}",
                obs.forecast
            );
        }
        for i in 0..50 {
            let obs = f.observe("s", &[(i % 7) as f32]).unwrap();
            if i == 49 {
                let bounds: Vec<f32> = obs.lower.iter().chain(obs.upper).copied().collect();
                assert!(
                    !bounds.is_empty() && bounds.iter().all(|b| b.is_finite()),
                    "learning {learning:?}: bounds {bounds:?}"
                );
                let score = obs.anomaly.expect("a score");
                assert!(score.is_finite(), "learning {learning:?}: score {score}");
            }
        }
        let s = f.stream("s").unwrap();
        assert!(
            s.buf.iter().all(|v| v.is_finite()),
            "learning {learning:?}: state not finite"
        );
    }
}

#[test]
fn a_checkpoint_resumes_bit_for_bit() {
    let evs = events(3000, 4);
    // Fixed scaling: the shared-weight streams solve their own fits from their increment sums.
    let runs = [
        (WeightScope::Shared, recur::model::Normalize::Running),
        (WeightScope::Shared, recur::model::Normalize::None),
        (WeightScope::PerStream, recur::model::Normalize::Running),
    ];
    for (scope, normalize) in runs {
        let cfg = ModelConfig {
            weight_scope: scope,
            normalize,
            cell: CellKind::Gru,
            horizon: 3,
            ..ModelConfig::default()
        };
        let mut straight = Forecaster::<f32>::new(cfg.clone()).unwrap();
        let whole = run(&mut straight, &evs);

        let mut first = Forecaster::<f32>::new(cfg).unwrap();
        let mut resumed = run(&mut first, &evs[..1700]);
        let bytes = first.to_safetensors();
        let mut second = Forecaster::<f32>::from_safetensors(&bytes).unwrap();
        resumed.extend(run(&mut second, &evs[1700..]));
        assert_eq!(
            whole, resumed,
            "{scope:?} {normalize:?}: restored run diverged"
        );
        assert_eq!(second.shared().updates, straight.shared().updates);
    }
}

#[test]
fn checkpoints_use_pytorch_names_and_layout() {
    let cfg = ModelConfig {
        layers: 2,
        hidden: 4,
        inputs: 2,
        horizon: 2,
        ..ModelConfig::default()
    };
    let mut f = Forecaster::<f32>::new(cfg).unwrap();
    for x in NoisySine::new(9.0, 0.1, 1).take(30) {
        f.observe("a", &[x as f32, 1.0 - x as f32]).unwrap();
    }
    let bytes = f.to_safetensors();
    let r = Reader::new(&bytes).unwrap();
    assert_eq!(r.meta("format"), Some("pt"));
    let (shape, vals) = r.tensor::<f32>("rnn.weight_ih_l1").unwrap();
    assert_eq!(shape, vec![16, 4]);
    let view = f
        .shared()
        .params
        .tensor(f.layout(), "rnn.weight_ih_l1")
        .unwrap();
    for row in 0..16 {
        for col in 0..4 {
            assert_eq!(
                vals[row * 4 + col],
                view[[row, col]],
                "row-major like torch"
            );
        }
    }
    let (shape, _) = r.tensor::<f32>("head.weight").unwrap();
    assert_eq!(shape, vec![4, 4], "2 steps x 2 targets by 4 hidden");
    assert!(r.has("optimizer.exp_avg.rnn.weight_hh_l0") && r.has("optimizer.exp_avg_sq.head.bias"));

    // A corrupted file is an error, not a panic.
    assert!(Forecaster::<f32>::from_safetensors(&bytes[..bytes.len() / 2]).is_err());
    assert!(Forecaster::<f32>::from_safetensors(b"nonsense").is_err());
    // And an f32 checkpoint does not load as f64.
    assert!(Forecaster::<f64>::from_safetensors(&bytes).is_err());
}

#[test]
fn learning_off_never_changes_weights() {
    let cfg = ModelConfig {
        learning: Learning::Off,
        ..ModelConfig::default()
    };
    let mut f = Forecaster::<f32>::new(cfg).unwrap();
    let init = f.shared().params.clone();
    run(&mut f, &events(500, 2));
    assert_eq!(f.shared().params, init);
    assert_eq!(f.stats().updates, 0);
}

/// A value past everything a stream has seen, and past its widest interval,
/// scores 1; one as far from the forecast but inside the range seen does not.
#[test]
fn a_value_new_to_the_streams_range_scores_one() {
    let cfg = ModelConfig::default();
    assert!(!cfg.intervals.is_empty(), "intervals are on by default");
    // Heavy-tailed noise around a level, with rare large dips: the tails
    // make a big residual only "very unlikely", never certain.
    let mut rng = recur::model::rng::Rng::new(5);
    let mut f = Forecaster::<f32>::new(cfg.clone()).unwrap();
    for i in 0..1500 {
        let u = rng.unit() - 0.5;
        let noise = -u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln();
        let dip = if i % 97 == 0 { -40.0 } else { 0.0 };
        f.observe("s", &[(10.0 + noise + dip) as f32]).unwrap();
    }
    // As far below the forecast as the dips went: inside the range seen.
    let mut g = f.clone();
    let inside = g.observe("s", &[-30.0]).unwrap().anomaly.unwrap();
    assert!(inside > 0.95 && inside < 1.0, "{inside}");
    // As far above: new to the range.
    let above = f.observe("s", &[50.0]).unwrap().anomaly.unwrap();
    assert_eq!(above, 1.0);
}

/// Checkpoint files are read from disk (`state.init`, hot swap): whatever
/// their bytes, reading one either fails with an error or gives a learner
/// that can go on observing; it never panics.
#[test]
fn a_corrupt_checkpoint_file_is_an_error_never_a_panic() {
    for scope in [WeightScope::Shared, WeightScope::PerStream] {
        let cfg = ModelConfig {
            weight_scope: scope,
            horizon: 2,
            hidden: 4,
            ..ModelConfig::default()
        };
        let mut f = Forecaster::<f32>::new(cfg).unwrap();
        run(&mut f, &events(200, 3));
        let good = f.to_safetensors();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // The header (JSON) is at the front; tensors follow.
        let header = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        for round in 0..1500 {
            let mut bytes = good.clone();
            match round % 3 {
                0 => bytes.truncate(next() as usize % bytes.len()),
                1 => {
                    let i = next() as usize % header;
                    bytes[i] = next() as u8;
                }
                _ => {
                    for _ in 0..1 + next() % 4 {
                        let i = header + next() as usize % (bytes.len() - header);
                        bytes[i] = next() as u8;
                    }
                }
            }
            let result = std::panic::catch_unwind(|| {
                if let Ok(mut g) = Forecaster::<f32>::from_safetensors(&bytes) {
                    for k in 0..6 {
                        let _ = g.observe(&format!("s{}", k % 3), &[k as f32]);
                    }
                }
            });
            assert!(
                result.is_ok(),
                "{scope:?} round {round}: a corrupt checkpoint panicked"
            );
        }
    }
}

/// Shapes no machine has memory for are refused by name before anything is
/// allocated (an allocation that large aborts or swaps the host to death).
#[test]
fn shapes_too_large_for_memory_are_refused_naming_the_setting() {
    let huge = [
        (
            ModelConfig {
                hidden: 100_000_000,
                ..ModelConfig::default()
            },
            "model.hidden",
        ),
        (
            ModelConfig {
                horizon: 1_000_000,
                ..ModelConfig::default()
            },
            "model.horizon",
        ),
        (
            ModelConfig {
                tbptt: 100_000_000,
                ..ModelConfig::default()
            },
            "model.tbptt",
        ),
        (
            ModelConfig {
                linear: recur::model::linear::LinearConfig {
                    lags: recur::model::linear::Lags::Rows(100_000),
                    ..Default::default()
                },
                ..ModelConfig::default()
            },
            "model.linear.lags",
        ),
    ];
    for (cfg, key) in huge {
        match Forecaster::<f32>::new(cfg) {
            Ok(_) => panic!("{key}: accepted"),
            Err(e) => assert!(e.contains(key), "{key}: {e}"),
        }
    }
    // Large but real shapes still build.
    let big = ModelConfig {
        hidden: 512,
        horizon: 96,
        inputs: 7,
        ..ModelConfig::default()
    };
    assert!(Forecaster::<f32>::new(big).is_ok());
}

/// Bytes a stream holds after 50 events, over 100 streams with ten-character
/// keys (as `recur bench model` names them), under `cfg`.
fn state_bytes(cfg: ModelConfig) -> usize {
    let mut f = Forecaster::<f32>::new(cfg).unwrap();
    for t in 0..50 {
        for s in 0..100 {
            let x = (0.3 * t as f32 + s as f32).sin();
            f.observe(&format!("stream-{s:03}"), &[x]).unwrap();
        }
    }
    f.state_bytes_per_stream()
}

#[test]
fn a_default_stream_fits_in_a_kibibyte() {
    // The budget the defaults are held to: LSTM H = 32, one input, H = 1,
    // shared weights, intervals on.
    let cfg = ModelConfig::default();
    assert_eq!(
        (
            cfg.cell,
            cfg.hidden,
            cfg.inputs,
            cfg.horizon,
            cfg.weight_scope
        ),
        (CellKind::Lstm, 32, 1, 1, WeightScope::Shared)
    );
    assert!(!cfg.intervals.is_empty());
    let bytes = state_bytes(cfg);
    assert!(bytes <= 1024, "a default stream holds {bytes} bytes");
    // What the budget rules out: a linear expert of 48 rows at H = 1.
    let long = ModelConfig {
        linear: recur::model::linear::LinearConfig {
            lags: recur::model::linear::Lags::Rows(48),
            ..ModelConfig::default().linear
        },
        ..ModelConfig::default()
    };
    let wide = state_bytes(long);
    assert!(wide > 1024, "48 rows hold {wide} bytes");
}

#[test]
fn steps_a_stream_has_not_scored_yet_issue_the_point_forecast() {
    // A forecast's intervals take the widths its stream's calibration cells
    // leave when this event scores them; a step ahead that no forecast of
    // the stream has reached yet has an unstarted cell, so its interval is
    // the point forecast alone, whatever the stream before it left behind.
    let horizon = 3;
    let cfg = ModelConfig {
        horizon,
        ..ModelConfig::default()
    };
    let mut f = Forecaster::<f32>::new(cfg).unwrap();
    for i in 0..300 {
        f.observe("calibrated", &[(i % 7) as f32 * 3.0]).unwrap();
    }
    for n in 0..=horizon {
        let obs = f.observe("new", &[1.0 + (n * n) as f32]).unwrap();
        let levels = obs.lower.len() / horizon;
        assert_eq!(levels, 2, "the default levels");
        for l in 0..levels {
            for k in 0..horizon {
                let (lo, y, hi) = (
                    obs.lower[l * horizon + k],
                    obs.forecast[k],
                    obs.upper[l * horizon + k],
                );
                if k < n {
                    // Step k + 1 was scored at this event: its cell started.
                    assert!(
                        lo < y && y < hi,
                        "event {n}, level {l}, step {}: {lo} {y} {hi}",
                        k + 1
                    );
                } else {
                    assert!(
                        lo == y && hi == y,
                        "event {n}, level {l}, step {}: {lo} {y} {hi}",
                        k + 1
                    );
                }
            }
        }
    }
}

#[test]
fn a_level_listed_twice_is_refused_by_name() {
    // Each level's bounds are one slice of the prediction message: a
    // repeated level would have shaped the state for two and calibrated one.
    let cfg = ModelConfig {
        intervals: vec![0.95, 0.8, 0.8],
        ..ModelConfig::default()
    };
    let Err(err) = Forecaster::<f32>::new(cfg) else {
        panic!("a repeated level was accepted");
    };
    assert!(
        err.contains("model.intervals") && err.contains("0.8"),
        "{err}"
    );
}
