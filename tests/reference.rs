//! recur's cells against float64 PyTorch: forward states, both losses, every
//! gradient, clipping, and two Adam and two SGD steps, each to 1e-9.
//!
//! Cases are read from `../shared/reference/` (or `$RECUR_SHARED_DIR/reference`).

use std::path::PathBuf;

use recur::model::loss::Loss;
use recur::model::network::Tape;
use recur::model::optim::{
    Optimizer, OptimizerConfig, OptimizerKind, Spare, Update, clip_grad_norm,
};
use recur::model::{CellKind, Dims, ParamLayout, Params};
use serde_json::Value;

const TOL: f64 = 1e-9;

fn reference_dir() -> PathBuf {
    match std::env::var_os("RECUR_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir).join("reference"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference"),
    }
}

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        other => panic!("expected numbers, got {other}"),
    }
}

/// JSON names of the six parameter tensors and recur's `state_dict` names.
const NAMES: [(&str, &str); 6] = [
    ("W_ih", "rnn.weight_ih_l0"),
    ("W_hh", "rnn.weight_hh_l0"),
    ("b_ih", "rnn.bias_ih_l0"),
    ("b_hh", "rnn.bias_hh_l0"),
    ("V", "head.weight"),
    ("c", "head.bias"),
];

struct Case {
    name: String,
    d: Value,
    layout: ParamLayout,
    params: Params<f64>,
    x: Vec<f64>,
    init: Vec<f64>,
    targets: Vec<f64>,
    t: usize,
    o: usize,
    h: usize,
    lstm: bool,
}

/// Tracks the worst difference per quantity so a failure names what broke.
#[derive(Default)]
struct Checker {
    checked: usize,
    failures: Vec<String>,
}

impl Checker {
    fn close(&mut self, what: &str, got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        self.checked += 1;
        if worst.is_nan() || worst > TOL {
            self.failures.push(format!("{what}: max |diff| {worst:e}"));
        }
    }
}

fn load(path: &PathBuf) -> Case {
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cell = match d["cell"].as_str().unwrap() {
        "lstm" => CellKind::Lstm,
        "gru" => CellKind::Gru,
        "rnn" => CellKind::Rnn,
        other => panic!("unknown cell {other}"),
    };
    let n = |k: &str| d[k].as_u64().unwrap() as usize;
    let dims = Dims {
        cell,
        inputs: n("D"),
        hidden: n("H"),
        layers: 1,
        outputs: n("O"),
    };
    let layout = ParamLayout::new(dims);
    let mut params = Params::zeros(&layout);
    for (json, name) in NAMES {
        params
            .set_tensor(&layout, name, &flat(&d["params"][json]))
            .unwrap();
    }
    let lstm = cell == CellKind::Lstm;
    let mut init = flat(&d["h0"]);
    if lstm {
        init.extend(flat(&d["c0"]));
    }
    Case {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        x: flat(&d["x"]),
        targets: flat(&d["targets"]),
        t: n("T"),
        o: n("O"),
        h: n("H"),
        lstm,
        layout,
        params,
        init,
        d,
    }
}

/// Loss and gradients (parameters, x, initial state) of `p` on the case's data.
fn loss_and_grads(
    c: &Case,
    p: &Params<f64>,
    last_only: bool,
) -> (f64, Params<f64>, Vec<f64>, Vec<f64>, Tape<f64>) {
    let mut tape = Tape::new(c.layout.dims, c.t);
    tape.forward(&c.layout, p, &c.x, &c.init);
    let first = if last_only { c.t - 1 } else { 0 };
    let count = (c.t - first) * c.o;
    let mut dys = vec![0.0; count];
    let mut y = vec![0.0; c.o];
    let mut loss = 0.0;
    for (row, t) in (first..c.t).enumerate() {
        tape.head(&c.layout, p, t + 1, &mut y);
        loss += Loss::Mse.accumulate(
            &y,
            &c.targets[t * c.o..(t + 1) * c.o],
            count,
            &mut dys[row * c.o..(row + 1) * c.o],
        );
    }
    let mut grads = Params::zeros(&c.layout);
    let mut dx = vec![0.0; c.x.len()];
    let mut d_init = vec![0.0; c.init.len()];
    tape.backward(
        &c.layout,
        p,
        &c.x,
        &dys,
        &mut grads,
        Some(&mut dx),
        &mut d_init,
    );
    (loss, grads, dx, d_init, tape)
}

fn check_case(c: &Case, chk: &mut Checker) {
    let d = &c.d;
    let tag = |q: &str| format!("{}: {q}", c.name);
    // Forward: states, cell states, head outputs.
    let (_, _, _, _, tape) = loss_and_grads(c, &c.params, false);
    let hs: Vec<f64> = (1..=c.t).flat_map(|t| tape.top(t).to_vec()).collect();
    chk.close(&tag("h"), &hs, &flat(&d["h"]));
    if c.lstm {
        let cs: Vec<f64> = (1..=c.t)
            .flat_map(|t| tape.state(t)[c.h..].to_vec())
            .collect();
        chk.close(&tag("c_states"), &cs, &flat(&d["c_states"]));
    }
    let mut y = vec![0.0; c.o];
    let ys: Vec<f64> = (1..=c.t)
        .flat_map(|t| {
            tape.head(&c.layout, &c.params, t, &mut y);
            y.clone()
        })
        .collect();
    chk.close(&tag("y"), &ys, &flat(&d["y"]));

    // Both losses and every gradient.
    for (which, last_only) in [("all", false), ("last", true)] {
        let (loss, grads, dx, d_init, _) = loss_and_grads(c, &c.params, last_only);
        chk.close(
            &tag(&format!("loss_{which}")),
            &[loss],
            &[d[format!("loss_{which}")].as_f64().unwrap()],
        );
        let g = &d[format!("grads_{which}")];
        for (json, name) in NAMES {
            let got = grads.tensor_values(c.layout.spec(name).unwrap());
            chk.close(
                &tag(&format!("grads_{which}.{json}")),
                &got,
                &flat(&g[json]),
            );
        }
        chk.close(&tag(&format!("grads_{which}.x")), &dx, &flat(&g["x"]));
        chk.close(
            &tag(&format!("grads_{which}.h0")),
            &d_init[..c.h],
            &flat(&g["h0"]),
        );
        if c.lstm {
            chk.close(
                &tag(&format!("grads_{which}.c0")),
                &d_init[c.h..],
                &flat(&g["c0"]),
            );
        }
    }

    // Clipping at the initial parameters.
    let opt = &d["optimizer_reference"];
    let max_norm = opt["clip"]["max_norm"].as_f64().unwrap();
    let (_, mut grads, _, _, _) = loss_and_grads(c, &c.params, false);
    let report = clip_grad_norm(&mut grads, max_norm);
    chk.close(
        &tag("clip.grad_norm_all"),
        &[report.total_norm],
        &[opt["clip"]["grad_norm_all"].as_f64().unwrap()],
    );
    chk.close(
        &tag("clip.coef"),
        &[report.coef],
        &[opt["clip"]["coef"].as_f64().unwrap()],
    );
    for (json, name) in NAMES {
        let got = grads.tensor_values(c.layout.spec(name).unwrap());
        chk.close(
            &tag(&format!("clip.{json}")),
            &got,
            &flat(&opt["clip"]["clipped_grads_all"][json]),
        );
    }

    // Two Adam steps and two SGD steps, each recomputing the loss and clipping.
    for kind in ["adam", "sgd"] {
        let cfg = &opt[kind];
        let ocfg = if kind == "adam" {
            let betas = flat(&cfg["betas"]);
            OptimizerConfig {
                kind: OptimizerKind::Adam,
                lr: cfg["lr"].as_f64().unwrap(),
                momentum: 0.0,
                betas: [betas[0], betas[1]],
                eps: cfg["eps"].as_f64().unwrap(),
                weight_decay: cfg["weight_decay"].as_f64().unwrap(),
            }
        } else {
            OptimizerConfig {
                kind: OptimizerKind::Sgd,
                lr: cfg["lr"].as_f64().unwrap(),
                momentum: cfg["momentum"].as_f64().unwrap(),
                ..OptimizerConfig::default()
            }
        };
        let mut p = c.params.clone();
        let mut optimizer = Optimizer::new(ocfg, &c.layout);
        let mut spare = Spare::new(ocfg, &c.layout);
        for st in cfg["steps"].as_array().unwrap() {
            let k = st["step"].as_u64().unwrap();
            let (loss, mut grads, _, _, _) = loss_and_grads(c, &p, false);
            chk.close(
                &tag(&format!("{kind}.step{k}.loss_before")),
                &[loss],
                &[st["loss_before"].as_f64().unwrap()],
            );
            let report = clip_grad_norm(&mut grads, max_norm);
            chk.close(
                &tag(&format!("{kind}.step{k}.grad_norm_before_clip")),
                &[report.total_norm],
                &[st["grad_norm_before_clip"].as_f64().unwrap()],
            );
            assert_eq!(
                optimizer.update(&mut p, &mut grads, &mut spare),
                Update::Applied
            );
            for (json, name) in NAMES {
                let got = p.tensor_values(c.layout.spec(name).unwrap());
                chk.close(
                    &tag(&format!("{kind}.step{k}.{json}")),
                    &got,
                    &flat(&st["params_after"][json]),
                );
            }
        }
    }
}

#[test]
fn every_reference_case_matches_pytorch() {
    let dir = reference_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reference cases not found in {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "lstm.json",
        "gru.json",
        "rnn.json",
        "lstm_O2.json",
        "gru_O2.json",
        "rnn_O2.json",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "reference case {want} missing from {}",
            dir.display()
        );
    }
    let mut chk = Checker::default();
    for path in &paths {
        check_case(&load(path), &mut chk);
    }
    eprintln!(
        "{} cases, {} quantities checked to {TOL:e}",
        paths.len(),
        chk.checked
    );
    assert!(
        chk.failures.is_empty(),
        "mismatches:\n{}",
        chk.failures.join("\n")
    );
    assert!(paths.len() >= 6);
}
