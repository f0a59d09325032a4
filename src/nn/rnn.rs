//! Recurrent layers with PyTorch's `nn.RNN` / `nn.LSTM` / `nn.GRU` layouts, names,
//! gate orders and init, so a `state_dict()` moves both ways; and `nn.Embedding`.
//!
//! Backpropagation through time runs in the same plan as everything else: per layer,
//! the input projection of all time steps is one GEMM (with both biases, `b_ih +
//! b_hh`, but for the GRU, which needs `b_hh` inside its n gate); each step is one
//! GEMM (`h·W_hhᵀ`, `+ b_hh` for the GRU) and one fused cell kernel (`Tensor::lstm_cell`,
//! `Tensor::gru_cell`; the plain RNN's `act(xg + hg)` is two elementwise kernels),
//! whose fused backward is one kernel too. A plan is compiled per sequence length and batch size
//! (its structure is the unrolled graph): the first batch of a new length pays one
//! compilation (shaders and pipelines are shared, so that is mostly scheduling), every
//! later one of that length reuses it.
//!
//! A bidirectional stack (`RnnConfig::bidirectional`, PyTorch's `bidirectional=True`)
//! has a second set of parameters per layer under PyTorch's `_reverse` names; that
//! direction runs the same projection and cell kernels over the time steps taken
//! last to first (the sequence is never copied reversed: the steps are visited in
//! the other order and the outputs put back in time order), and each layer's output
//! is both directions' outputs joined on the last axis, `[.., 2H]`.

use super::{Member, MemberMut, Module, ModuleFields, TensorSpec};
use crate::{Device, Result, Tensor};

/// Settings of a recurrent layer stack, as PyTorch's constructor arguments.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RnnConfig {
    /// Stacked layers; layer k > 0 reads the output sequence of layer k − 1.
    pub num_layers: usize,
    /// Inputs and outputs are `[B, T, ·]` instead of `[T, B, ·]` (states stay
    /// `[layers, B, H]`, as in PyTorch).
    pub batch_first: bool,
    /// Whether the layers have `bias_ih_l{k}` and `bias_hh_l{k}`.
    pub bias: bool,
    /// Dropout probability on the outputs of every layer but the last, in training only.
    pub dropout: f32,
    /// Each layer also runs over the sequence from its last step to its first, as
    /// PyTorch's `bidirectional=True`: parameters `weight_ih_l{k}_reverse`,
    /// `weight_hh_l{k}_reverse`, `bias_ih_l{k}_reverse`, `bias_hh_l{k}_reverse` after
    /// each layer's forward ones; outputs `[T, B, 2H]` (or `[B, T, 2H]`), the forward
    /// direction's `H` features first, the reverse direction's after, and layer k > 0
    /// reads those `2H` features; states (initial and final) `[2·layers, B, H]` in
    /// PyTorch's order: layer 0 forward, layer 0 reverse, layer 1 forward, …
    /// Default `false`.
    pub bidirectional: bool,
}

impl Default for RnnConfig {
    fn default() -> RnnConfig {
        RnnConfig {
            num_layers: 1,
            batch_first: false,
            bias: true,
            dropout: 0.0,
            bidirectional: false,
        }
    }
}

impl RnnConfig {
    /// Directions per layer: 2 when bidirectional, else 1.
    fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }
}

/// The state of an LSTM stack: `h` and `c`, each `[layers, B, H]` (`[2·layers, B, H]`
/// when bidirectional: layer 0 forward, layer 0 reverse, layer 1 forward, …).
#[derive(Clone, Debug)]
pub struct LstmState {
    /// Hidden states, the last time step's output of each layer.
    pub h: Tensor,
    /// Cell states.
    pub c: Tensor,
}

impl LstmState {
    /// The same values with no gradient flowing back through them: carry a state
    /// across chunks of a long sequence (truncated backpropagation through time).
    pub fn detach(&self) -> LstmState {
        LstmState {
            h: self.h.detach(),
            c: self.c.detach(),
        }
    }
}

/// The parameters of one layer: `[G·H, in]`, `[G·H, H]` and two `[G·H]` biases.
struct Layer {
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Option<Tensor>,
    bias_hh: Option<Tensor>,
}

impl Layer {
    /// PyTorch's init: every parameter uniform in ±1/√H, drawn in state_dict order.
    fn new(gates: usize, input: usize, hidden: usize, bias: bool, device: &Device) -> Result<Layer> {
        let bound = 1.0 / (hidden.max(1) as f32).sqrt();
        let param = |shape: &[usize]| -> Result<Tensor> {
            Tensor::rand(shape, -bound, bound, crate::rng::next_seed(), device)?.requires_grad()
        };
        let weight_ih = param(&[gates * hidden, input])?;
        let weight_hh = param(&[gates * hidden, hidden])?;
        let (bias_ih, bias_hh) = if bias {
            (Some(param(&[gates * hidden])?), Some(param(&[gates * hidden])?))
        } else {
            (None, None)
        };
        Ok(Layer {
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
        })
    }

    /// Layer `k`'s parameters with PyTorch's names (`weight_ih_l{k}`, …, followed by
    /// `suffix`: `""` or `"_reverse"`), in `state_dict` order.
    fn members<'a>(&'a self, k: usize, suffix: &str, out: &mut Vec<(String, Member<'a>)>) {
        out.push((format!("weight_ih_l{k}{suffix}"), Member::Parameter(&self.weight_ih)));
        out.push((format!("weight_hh_l{k}{suffix}"), Member::Parameter(&self.weight_hh)));
        if let (Some(bi), Some(bh)) = (&self.bias_ih, &self.bias_hh) {
            out.push((format!("bias_ih_l{k}{suffix}"), Member::Parameter(bi)));
            out.push((format!("bias_hh_l{k}{suffix}"), Member::Parameter(bh)));
        }
    }

    /// [`Layer::members`], mutable.
    fn members_mut<'a>(&'a mut self, k: usize, suffix: &str, out: &mut Vec<(String, MemberMut<'a>)>) {
        let Layer {
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
        } = self;
        out.push((format!("weight_ih_l{k}{suffix}"), MemberMut::Parameter(weight_ih)));
        out.push((format!("weight_hh_l{k}{suffix}"), MemberMut::Parameter(weight_hh)));
        if let (Some(bi), Some(bh)) = (bias_ih, bias_hh) {
            out.push((format!("bias_ih_l{k}{suffix}"), MemberMut::Parameter(bi)));
            out.push((format!("bias_hh_l{k}{suffix}"), MemberMut::Parameter(bh)));
        }
    }
}

/// The nonlinearity of a plain RNN (`nn.RNN(nonlinearity=...)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Nonlinearity {
    /// `tanh` (PyTorch's default).
    #[default]
    Tanh,
    /// `max(x, 0)`.
    Relu,
}

/// Which cell a stack runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    Rnn(Nonlinearity),
    Lstm,
    Gru,
}

impl Cell {
    /// Gate blocks per layer (G in `[G·H, ·]`).
    fn gates(self) -> usize {
        match self {
            Cell::Rnn(_) => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Cell::Rnn(_) => "RNN",
            Cell::Lstm => "LSTM",
            Cell::Gru => "GRU",
        }
    }
}

/// A stack of recurrent layers of one cell kind: what [`Rnn`], [`Lstm`] and [`Gru`]
/// share.
struct Stack {
    cell: Cell,
    /// Layer k's direction d (0 forward, 1 reverse) at `k·directions + d`: PyTorch's
    /// order of parameters and of states.
    layers: Vec<Layer>,
    input_size: usize,
    hidden_size: usize,
    config: RnnConfig,
    training: bool,
}

impl Stack {
    fn new(cell: Cell, input_size: usize, hidden_size: usize, config: RnnConfig, device: &Device) -> Result<Stack> {
        let dirs = config.directions();
        let layers = (0..config.num_layers.max(1) * dirs)
            .map(|i| {
                let input = if i < dirs { input_size } else { dirs * hidden_size };
                Layer::new(cell.gates(), input, hidden_size, config.bias, device)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Stack {
            cell,
            layers,
            input_size,
            hidden_size,
            config,
            training: true,
        })
    }

    /// Directions per layer (1, or 2 when bidirectional).
    fn directions(&self) -> usize {
        self.config.directions()
    }

    /// Stacked layers (each of one or two directions).
    fn num_layers(&self) -> usize {
        self.layers.len() / self.directions()
    }

    /// Features of every output step: `H`, or `2H` when bidirectional.
    fn output_size(&self) -> usize {
        self.directions() * self.hidden_size
    }

    fn name(&self) -> String {
        format!(
            "{}({}, {}, num_layers={}{})",
            self.cell.name(),
            self.input_size,
            self.hidden_size,
            self.num_layers(),
            if self.config.bidirectional {
                ", bidirectional=True"
            } else {
                ""
            }
        )
    }

    /// The batch size of a valid input.
    #[track_caller]
    fn check_input(&self, x: &Tensor) -> usize {
        let s = x.shape();
        assert!(
            s.len() == 3 && s[2] == self.input_size,
            "{}: expects input [{}, {}, {}], got {s:?}",
            self.name(),
            if self.config.batch_first { "B" } else { "T" },
            if self.config.batch_first { "T" } else { "B" },
            self.input_size
        );
        if self.config.batch_first {
            s[0]
        } else {
            s[1]
        }
    }

    /// `[T, B, I]` (or `[B, T, I]`) f32 in, `[T, B, H]` (or `[B, T, H]`; `2H` when
    /// bidirectional) out.
    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<TensorSpec, String> {
        input.expect_f32()?;
        let order = if self.config.batch_first {
            "[B, T, I]"
        } else {
            "[T, B, I]"
        };
        match input.shape[..] {
            [a, b, i] if i == self.input_size => Ok(TensorSpec::f32(&[a, b, self.output_size()])),
            [_, _, i] => Err(format!("expects {} input features, the data has {i}", self.input_size)),
            _ => Err(format!(
                "expects sequences {order} with I = {}, the data has shape {:?}",
                self.input_size, input.shape
            )),
        }
    }

    #[track_caller]
    fn check_state(&self, state: Option<&Tensor>, batch: usize) {
        let want = [self.layers.len(), batch, self.hidden_size];
        if let Some(t) = state {
            let layout = if self.config.bidirectional {
                "[2·layers, B, H]: layer 0 forward, layer 0 reverse, layer 1 forward, …"
            } else {
                "[layers, B, H]"
            };
            assert!(
                t.shape() == want,
                "{}: the state must be {want:?} ({layout}), got {:?}",
                self.name(),
                t.shape()
            );
        }
    }

    /// The output sequence and the final h (and c for an LSTM) of every layer and
    /// direction, `[layers, B, H]` (`[2·layers, B, H]` when bidirectional).
    #[track_caller]
    fn run(&self, x: &Tensor, h0: Option<&Tensor>, c0: Option<&Tensor>) -> (Tensor, Tensor, Option<Tensor>) {
        let products: Vec<&dyn GateProducts> = self.layers.iter().map(|l| l as &dyn GateProducts).collect();
        self.run_with(x, h0, c0, &products)
    }

    /// Each layer's (and direction's, PyTorch's order) `(weight_ih, weight_hh)`, and
    /// whether it reads the stack's input (else the layer below's hidden states).
    fn gate_weights(&self) -> Vec<(Tensor, Tensor, bool)> {
        let dirs = self.directions();
        let layers = self.layers.iter().enumerate();
        layers
            .map(|(i, l)| (l.weight_ih.clone(), l.weight_hh.clone(), i < dirs))
            .collect()
    }

    /// [`Stack::run`] with layer `i`'s (PyTorch's order) gate products by
    /// `products[i]`.
    #[track_caller]
    fn run_with(
        &self,
        x: &Tensor,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
        products: &[&dyn GateProducts],
    ) -> (Tensor, Tensor, Option<Tensor>) {
        assert_eq!(
            products.len(),
            self.layers.len(),
            "{}: one product form per layer",
            self.name()
        );
        let (hidden, batch) = (self.hidden_size, self.check_input(x));
        self.check_state(h0, batch);
        self.check_state(c0, batch);
        let zeros = || Tensor::zeros(&[batch, hidden], x.device());
        let (layers, dirs) = (self.num_layers(), self.directions());
        let mut seq = if self.config.batch_first {
            x.transpose(0, 1)
        } else {
            x.clone()
        };
        let (mut hs, mut cs) = (Vec::new(), Vec::new());
        for (k, pair) in self.layers.chunks(dirs).enumerate() {
            let mut outs = Vec::with_capacity(dirs);
            for (d, layer) in pair.iter().enumerate() {
                let i = k * dirs + d;
                let h = h0.map_or_else(zeros, |s| s.select(0, i));
                let c = c0.map_or_else(zeros, |s| s.select(0, i));
                let (out, hn, cn) = layer.run(self.cell, &seq, (h, c), d == 1, products[i]);
                outs.push(out);
                hs.push(hn);
                cs.push(cn);
            }
            let out = match &outs[..] {
                [forward, reverse] => Tensor::cat(&[forward, reverse], 2),
                _ => outs.pop().expect("one direction"),
            };
            let between = k + 1 < layers && self.training && !super::inference_mode() && self.config.dropout > 0.0;
            seq = if between {
                out.dropout(self.config.dropout, crate::rng::next_seed())
            } else {
                out
            };
        }
        let out = if self.config.batch_first {
            seq.transpose(0, 1)
        } else {
            seq
        };
        let stack = |v: &[Tensor]| Tensor::stack(&v.iter().collect::<Vec<_>>(), 0);
        let c = (self.cell == Cell::Lstm).then(|| stack(&cs));
        (out, stack(&hs), c)
    }
}

/// What PyTorch appends to the parameter names of direction d (0 forward, 1 reverse).
const DIRECTION_SUFFIX: [&str; 2] = ["", "_reverse"];

/// Every layer's parameters, named as PyTorch's recurrent modules name them.
impl ModuleFields for Stack {
    fn members(&self) -> Vec<(String, Member<'_>)> {
        let dirs = self.directions();
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            layer.members(i / dirs, DIRECTION_SUFFIX[i % dirs], &mut out);
        }
        out
    }
    fn members_mut(&mut self) -> Vec<(String, MemberMut<'_>)> {
        let dirs = self.directions();
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.members_mut(i / dirs, DIRECTION_SUFFIX[i % dirs], &mut out);
        }
        out
    }
}

/// How one layer (one direction) computes its two gate products, `x·W_ihᵀ + b` for
/// all steps at once and `h·W_hhᵀ + b` per step: in f32 through `linear` (a
/// [`Layer`]; f16 inputs under [`crate::amp::autocast`]) or in int8
/// (`crate::quantize::QuantizedRecurrent`). The recurrence around them is shared.
pub(crate) trait GateProducts {
    /// `x [rows, in]` times the input weights, plus `bias` (`[G·H]`) when given.
    fn input_product(&self, x: &Tensor, bias: Option<&Tensor>) -> Tensor;
    /// `h [B, H]` times the hidden weights, plus `bias` when given.
    fn hidden_product(&self, h: &Tensor, bias: Option<&Tensor>) -> Tensor;
}

impl GateProducts for Layer {
    fn input_product(&self, x: &Tensor, bias: Option<&Tensor>) -> Tensor {
        x.linear(&self.weight_ih, bias)
    }
    fn hidden_product(&self, h: &Tensor, bias: Option<&Tensor>) -> Tensor {
        h.linear(&self.weight_hh, bias)
    }
}

impl Layer {
    /// One layer over `[T, B, in]`: the output sequence `[T, B, H]` and the final h
    /// and c (c is unused but by the LSTM), the products by `products` (this layer's
    /// weights, or another form of them), the biases this layer's. With `reverse` the
    /// steps run from the last to the first (the final state is the one after step 0)
    /// and the outputs are still in time order.
    fn run(
        &self,
        cell: Cell,
        seq: &Tensor,
        (h0, c0): (Tensor, Tensor),
        reverse: bool,
        products: &dyn GateProducts,
    ) -> (Tensor, Tensor, Tensor) {
        let (t, b, input) = (seq.shape()[0], seq.shape()[1], seq.shape()[2]);
        let gates = self.weight_hh.shape()[0];
        // Where the cell only uses xg + hg (not the GRU, whose n gate scales the
        // hidden projection by r), both biases are added once, to the input
        // projection of all steps: no bias per step, and the two biases' gradient
        // is one column sum instead of one per step plus their additions.
        let (bias_x, bias_h) = match (&self.bias_ih, &self.bias_hh) {
            (Some(b_ih), Some(b_hh)) if cell != Cell::Gru => (Some(b_ih + b_hh), None),
            (b_ih, b_hh) => (b_ih.clone(), b_hh.clone()),
        };
        let projected = products
            .input_product(&seq.reshape(&[t * b, input]), bias_x.as_ref())
            .reshape(&[t, b, gates]);
        // Forward, with a step of whole multiples of 64 words (every adapter's view
        // alignment), the output is a range of the states h0, h1, … hT joined: their
        // join for W_hh's gradient (autograd's joined products read h0 … hT−1) is then
        // a range of the same buffer, no copy (`graph/joins.rs`).
        let states_first = (!reverse && (b * h0.shape()[1]).is_multiple_of(64)).then(|| h0.clone());
        let (mut h, mut c) = (h0, c0);
        let mut outs = Vec::with_capacity(t);
        let mut steps = projected.unbind(0);
        if reverse {
            steps.reverse();
        }
        for xg in steps {
            let hg = products.hidden_product(&h, bias_h.as_ref());
            h = match cell {
                Cell::Lstm => {
                    let (h, c_next) = Tensor::lstm_cell(&xg, &hg, &c);
                    c = c_next;
                    h
                }
                Cell::Gru => Tensor::gru_cell(&xg, &hg, &h),
                Cell::Rnn(Nonlinearity::Tanh) => (&xg + &hg).tanh(),
                Cell::Rnn(Nonlinearity::Relu) => (&xg + &hg).relu(),
            };
            outs.push(h.clone());
        }
        if reverse {
            outs.reverse();
        }
        let out = match states_first {
            Some(h0) => {
                let states: Vec<&Tensor> = std::iter::once(&h0).chain(&outs).collect();
                Tensor::stack(&states, 0).narrow(0, 1, t)
            }
            None => Tensor::stack(&outs.iter().collect::<Vec<_>>(), 0),
        };
        (out, h, c)
    }
}

/// The [`Module`] methods of a recurrent layer type: forward is the output sequence
/// from a zero state.
macro_rules! recurrent_module {
    ($ty:ident) => {
        impl Module for $ty {
            /// The output sequence from a zero state.
            #[track_caller]
            fn forward(&self, x: &Tensor) -> Tensor {
                self.0.run(x, None, None).0
            }
            fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
                self.0.output_spec(input).map(Some)
            }
            fn name(&self) -> String {
                self.0.name()
            }
            fn set_training(&mut self, training: bool) {
                self.0.training = training;
            }
        }

        impl ModuleFields for $ty {
            fn members(&self) -> Vec<(String, Member<'_>)> {
                self.0.members()
            }
            fn members_mut(&mut self) -> Vec<(String, MemberMut<'_>)> {
                self.0.members_mut()
            }
        }
    };
}

/// A stack of LSTM layers, PyTorch's `nn.LSTM`: weights `weight_ih_l{k}` `[4H, I]`
/// (`[4H, H]` for k > 0), `weight_hh_l{k}` `[4H, H]`, biases `bias_ih_l{k}`,
/// `bias_hh_l{k}` `[4H]`, gates in the order i, f, g, o; bidirectional, the same
/// again as `weight_ih_l{k}_reverse`, … (layer k > 0 reads `2H` features).
pub struct Lstm(Stack);

impl Lstm {
    /// A stack initialised as PyTorch's (uniform in ±1/√H) from the thread's seed stream (`wgnn::manual_seed`).
    /// Panics only if the device cannot hold the parameters; [`Lstm::try_new`] returns
    /// that as an error.
    pub fn new(input_size: usize, hidden_size: usize, config: RnnConfig, device: &Device) -> Lstm {
        Lstm::try_new(input_size, hidden_size, config, device)
            .unwrap_or_else(|e| panic!("Lstm::new({input_size}, {hidden_size}): {e}"))
    }

    /// A stack initialised as PyTorch's, or the device's error.
    pub fn try_new(input_size: usize, hidden_size: usize, config: RnnConfig, device: &Device) -> Result<Lstm> {
        Stack::new(Cell::Lstm, input_size, hidden_size, config, device).map(Lstm)
    }

    /// Runs the sequence `x` (`[T, B, I]`, or `[B, T, I]` with `batch_first`) from
    /// `state` (zeros when `None`): the output sequence of the last layer (`[T, B, H]`
    /// or `[B, T, H]`; `2H` when bidirectional, the forward direction's features first)
    /// and the final state of every layer (`[layers, B, H]`, or `[2·layers, B, H]` when
    /// bidirectional, layer 0 forward, layer 0 reverse, …).
    ///
    /// # Panics
    /// If `x` is not 3-D with `I` features, or `state` has the wrong shape.
    #[track_caller]
    pub fn forward_seq(&self, x: &Tensor, state: Option<&LstmState>) -> (Tensor, LstmState) {
        let (out, h, c) = self.0.run(x, state.map(|s| &s.h), state.map(|s| &s.c));
        (
            out,
            LstmState {
                h,
                c: c.expect("an LSTM has a cell state"),
            },
        )
    }
}

recurrent_module!(Lstm);

impl Lstm {
    /// Each layer's `(weight_ih, weight_hh)` and whether it reads the input.
    pub(crate) fn gate_weights(&self) -> Vec<(Tensor, Tensor, bool)> {
        self.0.gate_weights()
    }

    /// [`Lstm::forward_seq`] with other forms of the gate products (one per layer).
    #[track_caller]
    pub(crate) fn forward_seq_with(
        &self,
        x: &Tensor,
        state: Option<&LstmState>,
        products: &[&dyn GateProducts],
    ) -> (Tensor, LstmState) {
        let (out, h, c) = self.0.run_with(x, state.map(|s| &s.h), state.map(|s| &s.c), products);
        let c = c.expect("an LSTM has a cell state");
        (out, LstmState { h, c })
    }
}

/// A stack of GRU layers, PyTorch's `nn.GRU`: `weight_ih_l{k}` `[3H, I]`,
/// `weight_hh_l{k}` `[3H, H]`, biases `[3H]`, gates r, z, n with
/// `n = tanh(W_in x + b_in + r ∘ (W_hn h + b_hn))`; bidirectional, `…_reverse` too.
pub struct Gru(Stack);

impl Gru {
    /// A stack initialised as PyTorch's (uniform in ±1/√H) from the thread's seed stream (`wgnn::manual_seed`).
    /// Panics only if the device cannot hold the parameters.
    pub fn new(input_size: usize, hidden_size: usize, config: RnnConfig, device: &Device) -> Gru {
        Gru::try_new(input_size, hidden_size, config, device)
            .unwrap_or_else(|e| panic!("Gru::new({input_size}, {hidden_size}): {e}"))
    }

    /// A stack initialised as PyTorch's, or the device's error.
    pub fn try_new(input_size: usize, hidden_size: usize, config: RnnConfig, device: &Device) -> Result<Gru> {
        Stack::new(Cell::Gru, input_size, hidden_size, config, device).map(Gru)
    }

    /// Runs the sequence `x` from `h0` (`[layers, B, H]`, or `[2·layers, B, H]` when
    /// bidirectional; zeros when `None`): the output sequence (`2H` features when
    /// bidirectional) and the final hidden state of every layer and direction.
    ///
    /// # Panics
    /// If `x` is not 3-D with `I` features, or `h0` has the wrong shape.
    #[track_caller]
    pub fn forward_seq(&self, x: &Tensor, h0: Option<&Tensor>) -> (Tensor, Tensor) {
        let (out, h, _) = self.0.run(x, h0, None);
        (out, h)
    }
}

recurrent_module!(Gru);

impl Gru {
    /// Each layer's `(weight_ih, weight_hh)` and whether it reads the input.
    pub(crate) fn gate_weights(&self) -> Vec<(Tensor, Tensor, bool)> {
        self.0.gate_weights()
    }

    /// [`Gru::forward_seq`] with other forms of the gate products (one per layer).
    #[track_caller]
    pub(crate) fn forward_seq_with(
        &self,
        x: &Tensor,
        h0: Option<&Tensor>,
        products: &[&dyn GateProducts],
    ) -> (Tensor, Tensor) {
        let (out, h, _) = self.0.run_with(x, h0, None, products);
        (out, h)
    }
}

/// A stack of plain (Elman) RNN layers, PyTorch's `nn.RNN`: `h = act(W_ih x + b_ih +
/// W_hh h + b_hh)` with `weight_ih_l{k}` `[H, I]`, `weight_hh_l{k}` `[H, H]`;
/// bidirectional, `…_reverse` too.
pub struct Rnn(Stack);

impl Rnn {
    /// A tanh stack initialised as PyTorch's (uniform in ±1/√H) from the thread's seed stream (`wgnn::manual_seed`).
    /// Panics only if the device cannot hold the parameters.
    pub fn new(input_size: usize, hidden_size: usize, config: RnnConfig, device: &Device) -> Rnn {
        Rnn::try_with(input_size, hidden_size, Nonlinearity::Tanh, config, device)
            .unwrap_or_else(|e| panic!("Rnn::new({input_size}, {hidden_size}): {e}"))
    }

    /// A stack with the given nonlinearity, or the device's error.
    pub fn try_with(
        input_size: usize,
        hidden_size: usize,
        nonlinearity: Nonlinearity,
        config: RnnConfig,
        device: &Device,
    ) -> Result<Rnn> {
        Stack::new(Cell::Rnn(nonlinearity), input_size, hidden_size, config, device).map(Rnn)
    }

    /// Runs the sequence `x` from `h0` (`[layers, B, H]`, or `[2·layers, B, H]` when
    /// bidirectional; zeros when `None`): the output sequence (`2H` features when
    /// bidirectional) and the final hidden state of every layer and direction.
    ///
    /// # Panics
    /// If `x` is not 3-D with `I` features, or `h0` has the wrong shape.
    #[track_caller]
    pub fn forward_seq(&self, x: &Tensor, h0: Option<&Tensor>) -> (Tensor, Tensor) {
        let (out, h, _) = self.0.run(x, h0, None);
        (out, h)
    }
}

recurrent_module!(Rnn);

/// A lookup table, PyTorch's `nn.Embedding`: `weight` `[num_embeddings, dim]`
/// initialised from N(0, 1); `forward` maps a label tensor of any shape to
/// `[.., dim]`. Its gradient is a deterministic scatter-add (same bits on every
/// device).
#[derive(Module)]
pub struct Embedding {
    /// `[num_embeddings, embedding_dim]`, trainable; `state_dict()` name `weight`.
    pub weight: Tensor,
}

impl Embedding {
    /// A table initialised as PyTorch's (standard normal) from the thread's seed stream (`wgnn::manual_seed`).
    /// Panics only if the device cannot hold it; [`Embedding::try_new`] returns that
    /// as an error.
    pub fn new(num_embeddings: usize, embedding_dim: usize, device: &Device) -> Embedding {
        Embedding::try_new(num_embeddings, embedding_dim, device)
            .unwrap_or_else(|e| panic!("Embedding::new({num_embeddings}, {embedding_dim}): {e}"))
    }

    /// A table initialised as PyTorch's, or the device's error.
    pub fn try_new(num_embeddings: usize, embedding_dim: usize, device: &Device) -> Result<Embedding> {
        let weight = Tensor::randn(&[num_embeddings, embedding_dim], crate::rng::next_seed(), device)?;
        Ok(Embedding {
            weight: weight.requires_grad()?,
        })
    }
}

impl Module for Embedding {
    /// Rows of the table for the labels `ids` (any shape): `[..ids.shape, dim]`. A
    /// label past the table is an error when the plan runs (`LabelOutOfRange`).
    #[track_caller]
    fn forward(&self, ids: &Tensor) -> Tensor {
        let dim = self.weight.shape()[1];
        let mut shape = ids.shape().to_vec();
        let rows = self.weight.index_select(0, &ids.reshape(&[ids.numel()]));
        shape.push(dim);
        rows.reshape(&shape)
    }

    fn name(&self) -> String {
        let s = self.weight.shape();
        format!("Embedding({}, {})", s[0], s[1])
    }

    /// u32 labels of any shape in, `[.., dim]` f32 out.
    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        if input.dtype != crate::DType::U32 {
            return Err(format!(
                "expects u32 labels (indices into {} rows), the data are f32 values",
                self.weight.shape()[0]
            ));
        }
        let mut shape = input.shape.clone();
        shape.push(self.weight.shape()[1]);
        Ok(Some(TensorSpec::f32(&shape)))
    }
}
