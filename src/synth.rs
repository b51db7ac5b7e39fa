//! Deterministic synthetic series for tests, benchmarks and demos.

use crate::model::rng::Rng;

/// A sine wave with Gaussian noise: `amp sin(2π t / period + phase) + noise`.
#[derive(Clone, Debug)]
pub struct NoisySine {
    t: u64,
    period: f64,
    amp: f64,
    phase: f64,
    noise: f64,
    rng: Rng,
}

impl NoisySine {
    /// A series with the given period (in events), noise standard deviation and seed.
    pub fn new(period: f64, noise: f64, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let phase = rng.uniform(0.0, std::f64::consts::TAU);
        NoisySine {
            t: 0,
            period,
            amp: 1.0,
            phase,
            noise,
            rng,
        }
    }
}

impl Iterator for NoisySine {
    type Item = f64;
    fn next(&mut self) -> Option<f64> {
        let x = self.amp * (std::f64::consts::TAU * self.t as f64 / self.period + self.phase).sin()
            + self.noise * self.rng.normal();
        self.t += 1;
        Some(x)
    }
}

/// A stationary AR(2) process `x_t = a x_{t-1} + b x_{t-2} + e_t`.
#[derive(Clone, Debug)]
pub struct Ar2 {
    a: f64,
    b: f64,
    noise: f64,
    prev: [f64; 2],
    rng: Rng,
}

impl Ar2 {
    /// A process with coefficients `a`, `b` (stationary when the roots lie inside the unit circle).
    pub fn new(a: f64, b: f64, noise: f64, seed: u64) -> Self {
        Ar2 {
            a,
            b,
            noise,
            prev: [0.0; 2],
            rng: Rng::new(seed),
        }
    }
}

impl Iterator for Ar2 {
    type Item = f64;
    fn next(&mut self) -> Option<f64> {
        let x = self.a * self.prev[0] + self.b * self.prev[1] + self.noise * self.rng.normal();
        self.prev = [x, self.prev[0]];
        Some(x)
    }
}

/// An hourly-looking series: daily and weekly seasonality, a slow trend,
/// noise and occasional level shifts. Each stream index gets its own shape.
#[derive(Clone, Debug)]
pub struct Seasonal {
    t: u64,
    base: f64,
    daily: f64,
    weekly: f64,
    trend: f64,
    noise: f64,
    shift_prob: f64,
    level: f64,
    rng: Rng,
}

impl Seasonal {
    /// Stream number `stream` of the generator seeded with `seed`.
    pub fn new(stream: u64, seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        Seasonal {
            t: 0,
            base: rng.uniform(10.0, 100.0),
            daily: rng.uniform(2.0, 10.0),
            weekly: rng.uniform(0.5, 4.0),
            trend: rng.uniform(-0.002, 0.002),
            noise: rng.uniform(0.2, 1.0),
            shift_prob: 1.0 / 2000.0,
            level: 0.0,
            rng,
        }
    }
}

impl Iterator for Seasonal {
    type Item = f64;
    fn next(&mut self) -> Option<f64> {
        use std::f64::consts::TAU;
        let t = self.t as f64;
        if self.rng.unit() < self.shift_prob {
            self.level += self.rng.normal() * 3.0 * self.daily;
        }
        let x = self.base
            + self.level
            + self.trend * t
            + self.daily * (TAU * t / 24.0).sin()
            + self.weekly * (TAU * t / 168.0).sin()
            + self.noise * self.rng.normal();
        self.t += 1;
        Some(x)
    }
}
