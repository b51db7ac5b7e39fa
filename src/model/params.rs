//! Parameter tensors in PyTorch's layout and names.
//!
//! All parameters of a network live in one flat `ndarray` vector so that the
//! optimiser, clipping and checkpoints walk them as one slice. [`ParamLayout`]
//! names every tensor exactly as `torch.nn.LSTM` / `GRU` / `RNN` (module `rnn`)
//! and `torch.nn.Linear` (module `head`) do in their `state_dict`:
//!
//! | name | shape | |
//! |---|---|---|
//! | `rnn.weight_ih_l{k}` | (G·H, D_k) | D_0 = inputs, D_k = H above |
//! | `rnn.weight_hh_l{k}` | (G·H, H) | |
//! | `rnn.bias_ih_l{k}`, `rnn.bias_hh_l{k}` | (G·H) | |
//! | `head.weight` | (O, H) | |
//! | `head.bias` | (O) | |
//!
//! G = 4 (LSTM, gates i,f,g,o), 3 (GRU, gates r,z,n) or 1 (Elman RNN). The
//! recurrent matrices are stored column-major in memory (see `scalar`), the
//! head row-major; [`Params::tensor`] returns either as a correctly shaped
//! `ArrayView2` whose logical indices are PyTorch's.

use std::ops::Range;

use ndarray::{Array1, ArrayView2, ShapeBuilder};
use serde::{Deserialize, Serialize};

use super::rng::Rng;
use super::scalar::Scalar;

/// Which recurrent cell the network uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellKind {
    /// Elman RNN, `h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`.
    Rnn,
    /// Elman RNN with ReLU instead of tanh.
    RnnRelu,
    /// Long short-term memory, gate order i, f, g, o.
    Lstm,
    /// Gated recurrent unit, gate order r, z, n, with `b_hn` inside the reset product.
    Gru,
}

impl CellKind {
    /// Gates per hidden unit (rows of `W_ih` are `gates() * hidden`).
    pub fn gates(self) -> usize {
        match self {
            CellKind::Rnn | CellKind::RnnRelu => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }

    /// True for the LSTM, the only cell with a memory cell `c` besides `h`.
    pub fn has_cell_state(self) -> bool {
        self == CellKind::Lstm
    }

    /// The name used in config files and CLI flags.
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Rnn => "rnn",
            CellKind::RnnRelu => "rnn_relu",
            CellKind::Lstm => "lstm",
            CellKind::Gru => "gru",
        }
    }
}

impl std::str::FromStr for CellKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rnn" | "rnn_tanh" => Ok(CellKind::Rnn),
            "rnn_relu" => Ok(CellKind::RnnRelu),
            "lstm" => Ok(CellKind::Lstm),
            "gru" => Ok(CellKind::Gru),
            other => Err(format!(
                "unknown cell `{other}` (expected lstm, gru, rnn or rnn_relu)"
            )),
        }
    }
}

/// The sizes that fix a network's parameter shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dims {
    /// The recurrent cell.
    pub cell: CellKind,
    /// Input size D of the first layer.
    pub inputs: usize,
    /// Hidden size H of every layer.
    pub hidden: usize,
    /// Number of stacked layers (>= 1).
    pub layers: usize,
    /// Head outputs O.
    pub outputs: usize,
}

impl Dims {
    /// Rows of each layer's gate block, `G * H`.
    pub fn gate_rows(&self) -> usize {
        self.cell.gates() * self.hidden
    }
    /// Input size of layer `l`.
    pub fn layer_inputs(&self, l: usize) -> usize {
        if l == 0 { self.inputs } else { self.hidden }
    }
    /// Floats in one copy of the recurrent state (`h`, plus `c` for the LSTM), all layers.
    pub fn state_len(&self) -> usize {
        let per = if self.cell.has_cell_state() { 2 } else { 1 };
        per * self.layers * self.hidden
    }
}

/// Memory order of a stored matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Each column contiguous (the recurrent weights).
    ColumnMajor,
    /// Each row contiguous (the head, vectors).
    RowMajor,
}

/// One named tensor inside the flat parameter vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The `state_dict` key.
    pub name: String,
    /// PyTorch shape: `[rows, cols]` or `[len]`.
    pub shape: Vec<usize>,
    /// Where the elements start in the flat vector.
    pub offset: usize,
    /// How a matrix's elements are ordered in memory.
    pub order: Order,
}

impl TensorSpec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True for a zero-sized tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The tensor's range in the flat vector.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
    /// Flat index (memory order) of PyTorch's logical element `(row, col)`.
    pub fn index(&self, row: usize, col: usize) -> usize {
        match (self.order, self.shape.as_slice()) {
            (Order::ColumnMajor, [rows, _]) => self.offset + col * rows + row,
            (Order::RowMajor, [_, cols]) => self.offset + row * cols + col,
            _ => self.offset + row,
        }
    }
}

/// The offsets of every tensor of a network with the given [`Dims`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamLayout {
    /// The sizes this layout was built for.
    pub dims: Dims,
    /// Tensors in `state_dict` order; per layer `[W_ih, W_hh, b_ih, b_hh]`, then head weight and bias.
    pub tensors: Vec<TensorSpec>,
    /// Total number of parameters.
    pub len: usize,
}

impl ParamLayout {
    /// Lays out the tensors for `dims`.
    pub fn new(dims: Dims) -> Self {
        let gh = dims.gate_rows();
        let mut tensors = Vec::new();
        let mut offset = 0;
        let mut push = |name: String, shape: Vec<usize>, order: Order| {
            let spec = TensorSpec {
                name,
                shape,
                offset,
                order,
            };
            offset += spec.len();
            tensors.push(spec);
        };
        for l in 0..dims.layers {
            let d = dims.layer_inputs(l);
            push(
                format!("rnn.weight_ih_l{l}"),
                vec![gh, d],
                Order::ColumnMajor,
            );
            push(
                format!("rnn.weight_hh_l{l}"),
                vec![gh, dims.hidden],
                Order::ColumnMajor,
            );
            push(format!("rnn.bias_ih_l{l}"), vec![gh], Order::RowMajor);
            push(format!("rnn.bias_hh_l{l}"), vec![gh], Order::RowMajor);
        }
        push(
            "head.weight".into(),
            vec![dims.outputs, dims.hidden],
            Order::RowMajor,
        );
        push("head.bias".into(), vec![dims.outputs], Order::RowMajor);
        ParamLayout {
            dims,
            tensors,
            len: offset,
        }
    }

    /// The spec named `name`, if any.
    pub fn spec(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Range of layer `l`'s four tensors `[W_ih | W_hh | b_ih | b_hh]`.
    fn layer_range(&self, l: usize) -> Range<usize> {
        let first = &self.tensors[4 * l];
        let last = &self.tensors[4 * l + 3];
        first.offset..last.offset + last.len()
    }
}

/// Borrowed view of one layer's parameters (or gradients).
pub struct Layer<'a, S> {
    /// `W_ih`, column-major (G·H rows, D_l columns).
    pub w_ih: &'a [S],
    /// `W_hh`, column-major (G·H rows, H columns).
    pub w_hh: &'a [S],
    /// `b_ih` (G·H).
    pub b_ih: &'a [S],
    /// `b_hh` (G·H).
    pub b_hh: &'a [S],
}

/// Mutable view of one layer's parameters (or gradients).
pub struct LayerMut<'a, S> {
    /// `W_ih`, column-major.
    pub w_ih: &'a mut [S],
    /// `W_hh`, column-major.
    pub w_hh: &'a mut [S],
    /// `b_ih`.
    pub b_ih: &'a mut [S],
    /// `b_hh`.
    pub b_hh: &'a mut [S],
}

/// All parameters of a network (or a gradient or optimiser moment of the same shape).
#[derive(Clone, Debug, PartialEq)]
pub struct Params<S> {
    /// The flat vector; see [`ParamLayout`] for what lives where.
    pub data: Array1<S>,
}

impl<S: Scalar> Params<S> {
    /// All zeros.
    pub fn zeros(layout: &ParamLayout) -> Self {
        Params {
            data: Array1::zeros(layout.len),
        }
    }

    /// PyTorch's default initialisation: every recurrent weight and bias
    /// U(-1/sqrt(H), 1/sqrt(H)); the head like `nn.Linear`, U(-1/sqrt(H), 1/sqrt(H)).
    pub fn init(layout: &ParamLayout, rng: &mut Rng) -> Self {
        let bound = 1.0 / (layout.dims.hidden as f64).sqrt();
        let data = Array1::from_shape_fn(layout.len, |_| S::of(rng.uniform(-bound, bound)));
        Params { data }
    }

    /// The whole flat vector.
    #[inline(always)]
    pub fn flat(&self) -> &[S] {
        self.data
            .as_slice()
            .expect("parameter vectors are contiguous")
    }

    /// The whole flat vector, mutably.
    #[inline(always)]
    pub fn flat_mut(&mut self) -> &mut [S] {
        self.data
            .as_slice_mut()
            .expect("parameter vectors are contiguous")
    }

    /// Layer `l`'s tensors.
    #[inline(always)]
    pub fn layer<'a>(&'a self, layout: &ParamLayout, l: usize) -> Layer<'a, S> {
        let t = &layout.tensors[4 * l..4 * l + 4];
        let flat = self.flat();
        Layer {
            w_ih: &flat[t[0].range()],
            w_hh: &flat[t[1].range()],
            b_ih: &flat[t[2].range()],
            b_hh: &flat[t[3].range()],
        }
    }

    /// Layer `l`'s tensors, mutably.
    #[inline(always)]
    pub fn layer_mut<'a>(&'a mut self, layout: &ParamLayout, l: usize) -> LayerMut<'a, S> {
        let t = &layout.tensors[4 * l..4 * l + 4];
        let range = layout.layer_range(l);
        let block = &mut self.flat_mut()[range];
        let (w_ih, rest) = block.split_at_mut(t[0].len());
        let (w_hh, rest) = rest.split_at_mut(t[1].len());
        let (b_ih, b_hh) = rest.split_at_mut(t[2].len());
        LayerMut {
            w_ih,
            w_hh,
            b_ih,
            b_hh,
        }
    }

    /// The head `(V, c)`: `V` row-major (O, H), `c` (O).
    #[inline(always)]
    pub fn head<'a>(&'a self, layout: &ParamLayout) -> (&'a [S], &'a [S]) {
        let n = layout.tensors.len();
        let flat = self.flat();
        (
            &flat[layout.tensors[n - 2].range()],
            &flat[layout.tensors[n - 1].range()],
        )
    }

    /// The head `(V, c)`, mutably.
    #[inline(always)]
    pub fn head_mut<'a>(&'a mut self, layout: &ParamLayout) -> (&'a mut [S], &'a mut [S]) {
        let n = layout.tensors.len();
        let v = layout.tensors[n - 2].range();
        let c = layout.tensors[n - 1].range();
        let tail = &mut self.flat_mut()[v.start..c.end];
        tail.split_at_mut(v.len())
    }

    /// A tensor by its `state_dict` name, as a 2-D view in PyTorch's logical
    /// order (vectors come back as a single row).
    pub fn tensor<'a>(&'a self, layout: &ParamLayout, name: &str) -> Option<ArrayView2<'a, S>> {
        let spec = layout.spec(name)?;
        let data = &self.flat()[spec.range()];
        let view = match (spec.order, spec.shape.as_slice()) {
            (Order::ColumnMajor, &[r, c]) => ArrayView2::from_shape((r, c).f(), data),
            (_, &[r, c]) => ArrayView2::from_shape((r, c), data),
            (_, &[n]) => ArrayView2::from_shape((1, n), data),
            _ => return None,
        };
        view.ok()
    }

    /// Overwrites a tensor from PyTorch-ordered values (row-major for matrices).
    pub fn set_tensor(
        &mut self,
        layout: &ParamLayout,
        name: &str,
        values: &[S],
    ) -> Result<(), String> {
        let spec = layout
            .spec(name)
            .ok_or_else(|| format!("no tensor named `{name}`"))?;
        if values.len() != spec.len() {
            return Err(format!(
                "tensor `{name}` has {} elements, got {}",
                spec.len(),
                values.len()
            ));
        }
        let cols = if spec.shape.len() == 2 {
            spec.shape[1]
        } else {
            1
        };
        let flat = self.flat_mut();
        for (k, &v) in values.iter().enumerate() {
            flat[spec.index(k / cols, k % cols)] = v;
        }
        Ok(())
    }

    /// A tensor's values in PyTorch order (row-major for matrices).
    pub fn tensor_values(&self, spec: &TensorSpec) -> Vec<S> {
        let cols = if spec.shape.len() == 2 {
            spec.shape[1]
        } else {
            1
        };
        let flat = self.flat();
        (0..spec.len())
            .map(|k| flat[spec.index(k / cols, k % cols)])
            .collect()
    }

    /// Sets every element to zero.
    pub fn fill_zero(&mut self) {
        self.data.fill(S::zero());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names_and_views_follow_pytorch() {
        let dims = Dims {
            cell: CellKind::Lstm,
            inputs: 3,
            hidden: 5,
            layers: 2,
            outputs: 2,
        };
        let layout = ParamLayout::new(dims);
        let names: Vec<_> = layout.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "rnn.weight_ih_l0",
                "rnn.weight_hh_l0",
                "rnn.bias_ih_l0",
                "rnn.bias_hh_l0",
                "rnn.weight_ih_l1",
                "rnn.weight_hh_l1",
                "rnn.bias_ih_l1",
                "rnn.bias_hh_l1",
                "head.weight",
                "head.bias"
            ]
        );
        assert_eq!(layout.spec("rnn.weight_ih_l1").unwrap().shape, vec![20, 5]);
        assert_eq!(
            layout.len,
            20 * 3 + 20 * 5 + 40 + 20 * 5 + 20 * 5 + 40 + 10 + 2
        );

        let mut p = Params::<f64>::zeros(&layout);
        let vals: Vec<f64> = (0..60).map(|k| k as f64).collect();
        p.set_tensor(&layout, "rnn.weight_ih_l0", &vals).unwrap();
        let view = p.tensor(&layout, "rnn.weight_ih_l0").unwrap();
        assert_eq!(view.dim(), (20, 3));
        assert_eq!(view[[4, 2]], 14.0); // row-major logical index 4*3+2
        // Column-major in memory: column 2 is contiguous.
        assert_eq!(p.layer(&layout, 0).w_ih[2 * 20 + 4], 14.0);
        assert_eq!(
            p.tensor_values(layout.spec("rnn.weight_ih_l0").unwrap()),
            vals
        );
    }
}
