// Recurrent layers' ops: the whole time loop of one layer and direction as one op, as cuDNN's
// RNN does (the engine runs it in one kernel call per batch, whatever the sequence length).
//   recurrence(xp, h0, [c0], w_hh, [w_hr], [b_hn], [bias], [lengths])   (N, T, W) packed outputs
//   recurrence(table, ids, h0, ...)  the same with xp's rows picked from a table by ids
//   recurrence(x, w_ih, h0, ...)     project_input (not GRU): each step's x w_ih^T is summed
//                                    with h w_hh^T in one product in the time loop
//   recurrence_grad(g, y, h0, [c0], w_hh, [w_hr], [lengths])    backpropagation through time
//                                    (g: the gradient of all of y's columns, or of h's alone)
//   sequence_end(x, [lengths])       (N, W): the step a recurrence ends at (t = length - 1, or 0
//                                    when reverse): final states, the last valid output; with
//                                    rows, a known batch (a stateful layer's state)
//   sequence_end_grad(g, like, [lengths])   sequence_end's gradient: g placed at that step
// The weight gradients are products over all steps at once, composed by the VJP rule from
// recurrence_grad's columns. No decomposition: the op harness compares with NumPy loops.
// Why one op and not a plan unrolled per length: the graph and its plans stay the same size
// whatever T is (one plan per length, each a single kernel call), and the saved gates are one
// buffer rather than T small ones; each weight gradient is one product over N * T rows.
#include "ir/ops/recurrent.h"

#include "ir/ops/op_support.h"

namespace gometal {

Cell cell_from_name(const std::string& name, std::string_view op) {
  if (name == "rnn_tanh") return Cell::RnnTanh;
  if (name == "rnn_relu") return Cell::RnnRelu;
  if (name == "lstm") return Cell::Lstm;
  if (name == "gru") return Cell::Gru;
  ops::fail(op, "cell must be one of rnn_tanh, rnn_relu, lstm, gru, got '" + name + "'");
}

RecurrentOperands recurrent_operands(Cell cell, const std::vector<size_t>& ranks, bool has_lengths, bool gradient,
                                     bool project_input, std::string_view op) {
  const size_t given = ranks.size() - (has_lengths ? 1 : 0);
  const bool lstm = cell == Cell::Lstm, gru = cell == Cell::Gru;
  RecurrentOperands r;
  size_t at = gradient ? 2 : 0;
  // (g, y) or xp, then h0, an LSTM's c0, w_hh; then the optional ones, told apart by rank
  if (!gradient) r.xp = static_cast<int>(at++);
  if (!gradient && project_input) r.w_ih = static_cast<int>(at++);
  else if (!gradient && ranks[0] == 2 && given > 1) r.ids = static_cast<int>(at++);
  r.h0 = static_cast<int>(at++);
  if (lstm) r.c0 = static_cast<int>(at++);
  r.w_hh = static_cast<int>(at++);
  if (lstm && at < given && ranks[at] == 2) r.w_hr = static_cast<int>(at++);
  if (gru && !gradient) r.b_hn = static_cast<int>(at++);
  if (!gradient && at < given && ranks[at] == 1) r.bias = static_cast<int>(at++);
  if (at != given) {
    const std::string form = gradient ? std::string("g, y, h0, ") + (lstm ? "c0, w_hh, [w_hr]" : "w_hh")
                             : std::string("xp, h0, ") + (lstm ? "c0, w_hh, [w_hr], [bias]"
                                                          : gru ? "w_hh, b_hn, [bias]"
                                                                : "w_hh, [bias]");
    const std::string xp_forms = project_input ? " (project_input: x (N, T, I) and w_ih (G*H, I) stand for xp)"
                                 : " (a table (V, G*H) and int32 ids (N, T) may stand for xp)";
    ops::fail(op, "expects " + form + " and optionally int32 lengths last, got " + std::to_string(ranks.size()) +
                      " inputs" + (gradient ? "" : xp_forms));
  }
  if (has_lengths) r.lengths = static_cast<int>(at);
  return r;
}

namespace {

using namespace ops;

struct Parsed {
  RecurrentLayout layout;
  RecurrentOperands at;
  int64_t n = 0, t = 0;
};

void require_shape(const Node& n, const Node& in, const Shape& want, const std::string& role) {
  require_dtype(n, in, DType::F32, role);
  if (in.shape != want)
    fail(name_of(n), role + " must have shape " + shape_str(want) + ", got " + shape_str(in.shape));
}

// An initial state (N, width); a stateful layer's has a known batch where the sequence's is
// a symbol, which the kernel compares when the plan is compiled.
void require_state(const Node& n, const Node& in, int64_t batch, int64_t width, const std::string& role) {
  const bool known_rows = in.shape.size() == 2 && is_symbol(batch) && !is_symbol(in.shape[0]);
  require_shape(n, in, {known_rows ? in.shape[0] : batch, width}, role);
}

// Checks every operand against w_hh (G*H, P) and the sequence (N, T, ...) `seq`.
Parsed parse(const Node& n, const std::vector<Node>& nodes, bool gradient) {
  Parsed p;
  const Cell cell = cell_from_name(n.attrs.cell, name_of(n));
  const bool has_lengths = !n.inputs.empty() && input(n, nodes, n.inputs.size() - 1).dtype == DType::I32;
  std::vector<size_t> ranks;
  for (size_t i = 0; i < n.inputs.size(); ++i) ranks.push_back(input(n, nodes, i).shape.size());
  p.at = recurrent_operands(cell, ranks, has_lengths, gradient, !gradient && n.attrs.project_input, name_of(n));
  RecurrentLayout& l = p.layout;
  l.cell = cell;
  l.lean = n.attrs.lean;
  l.sequence_only = n.attrs.sequence_only;
  if (gradient && l.lean) fail(name_of(n), "reads the saved gates of a recurrence that is not lean");
  // A GRU's n gate scales only the hidden part by r, so x's part cannot share the product.
  if (!gradient && n.attrs.project_input && cell == Cell::Gru)
    fail(name_of(n), "project_input needs an LSTM or plain RNN cell, got cell '" + n.attrs.cell + "'");
  if (l.sequence_only && !l.lean)
    fail(name_of(n), "sequence_only (h alone out) needs lean: a training form's saved gates and cell states "
                     "are read by its backward pass");
  l.gates = cell == Cell::Lstm ? 4 : cell == Cell::Gru ? 3 : 1;
  const Node& w_hh = input(n, nodes, p.at.w_hh);
  require_dtype(n, w_hh, DType::F32, "w_hh");
  if (w_hh.shape.size() != 2 || is_symbol(w_hh.shape[0]) || is_symbol(w_hh.shape[1]) || w_hh.shape[0] % l.gates != 0)
    fail(name_of(n), "w_hh must be (" + std::to_string(l.gates) + "*H, H_out) with known sizes, got " +
                         shape_str(w_hh.shape));
  l.hidden = w_hh.shape[0] / l.gates;
  l.out = w_hh.shape[1];
  l.projected = p.at.w_hr >= 0;
  if (l.projected) {
    require_shape(n, input(n, nodes, p.at.w_hr), {l.out, l.hidden}, "w_hr (H_out, H)");
    if (l.out >= l.hidden)
      fail(name_of(n), "a projection must be smaller than the hidden size, got H_out " + std::to_string(l.out) +
                           " and H " + std::to_string(l.hidden));
  } else if (l.out != l.hidden) {
    fail(name_of(n), "w_hh " + shape_str(w_hh.shape) + " must be (" + std::to_string(l.gates) + "*H, H) without w_hr");
  }
  const Node& seq = input(n, nodes, 0);
  require_dtype(n, seq, DType::F32, gradient ? "the output gradient" : "xp");
  if (p.at.ids >= 0) {
    // A table of projected rows (V, G*H) and the ids (N, T) that pick them, checked when run.
    const Node& ids = input(n, nodes, p.at.ids);
    require_dtype(n, ids, DType::I32, "ids");
    if (ids.shape.size() != 2) fail(name_of(n), "ids must be (N, T), got " + shape_str(ids.shape));
    if (is_symbol(seq.shape[0]) || seq.shape[1] != l.gate_width())
      fail(name_of(n), "table must be (V, " + std::to_string(l.gate_width()) + ") (V, G*H) with a known V, got " +
                           shape_str(seq.shape));
    p.n = ids.shape[0];
    p.t = ids.shape[1];
  } else if (seq.shape.size() != 3) {
    fail(name_of(n), "expects a sequence (N, T, C), got " + shape_str(seq.shape));
  } else {
    p.n = seq.shape[0];
    p.t = seq.shape[1];
  }
  if (gradient) {
    // The gradient of every column, or of h's alone (the others' are zero).
    const bool h_only = seq.shape.size() == 3 && seq.shape[2] == l.out;
    require_shape(n, seq, {p.n, p.t, h_only ? l.out : l.width()}, "the output gradient");
    require_shape(n, input(n, nodes, 1), {p.n, p.t, l.width()}, "y");
  } else if (p.at.w_ih >= 0) {
    const Node& w_ih = input(n, nodes, p.at.w_ih);
    require_dtype(n, w_ih, DType::F32, "w_ih");
    if (w_ih.shape.size() != 2 || w_ih.shape[0] != l.gate_width() || is_symbol(w_ih.shape[1]) ||
        w_ih.shape[1] != seq.shape[2])
      fail(name_of(n), "w_ih must be (" + std::to_string(l.gate_width()) + ", I) (G*H, I) with I = " +
                           std::to_string(seq.shape[2]) + " (x's last axis), got " + shape_str(w_ih.shape));
  } else if (p.at.ids < 0) {
    require_shape(n, seq, {p.n, p.t, l.gate_width()}, "xp (N, T, G*H)");
  }
  require_state(n, input(n, nodes, p.at.h0), p.n, l.out, "h0 (N, H_out)");
  if (p.at.c0 >= 0) require_state(n, input(n, nodes, p.at.c0), p.n, l.hidden, "c0 (N, H)");
  if (p.at.b_hn >= 0) require_shape(n, input(n, nodes, p.at.b_hn), {l.hidden}, "b_hn (H,)");
  if (p.at.bias >= 0) require_shape(n, input(n, nodes, p.at.bias), {l.gate_width()}, "bias (G*H,)");
  if (p.at.lengths >= 0 && input(n, nodes, p.at.lengths).shape != Shape{p.n})
    fail(name_of(n), "lengths must have shape " + shape_str({p.n}) + " (N,), got " +
                         shape_str(input(n, nodes, p.at.lengths).shape));
  return p;
}

void recurrence_shape(Node& n, const std::vector<Node>& nodes) {
  const Parsed p = parse(n, nodes, false);
  n.shape = {p.n, p.t, p.layout.width()};
}

void recurrence_grad_shape(Node& n, const std::vector<Node>& nodes) {
  const Parsed p = parse(n, nodes, true);
  n.shape = {p.n, p.t, p.layout.grad_width()};
}

// sequence_end(x (N, T, W), [lengths]) and sequence_end_grad(g (N, W), like (N, T, ...), [lengths]).
void check_lengths(const Node& n, const std::vector<Node>& nodes, size_t at, int64_t batch) {
  if (n.inputs.size() <= at) return;
  const Node& lengths = input(n, nodes, at);
  require_dtype(n, lengths, DType::I32, "lengths");
  if (lengths.shape != Shape{batch})
    fail(name_of(n), "lengths must have shape " + shape_str({batch}) + " (N,), got " + shape_str(lengths.shape));
}

void sequence_end_shape(Node& n, const std::vector<Node>& nodes) {
  if (n.inputs.size() != 1 && n.inputs.size() != 2)
    fail(name_of(n), "expects x (N, T, W) and optionally lengths, got " + std::to_string(n.inputs.size()) + " inputs");
  const Node& x = input(n, nodes, 0);
  require_dtype(n, x, DType::F32, "x");
  if (x.shape.size() != 3) fail(name_of(n), "expects x of rank 3 (N, T, W), got " + shape_str(x.shape));
  check_lengths(n, nodes, 1, x.shape[0]);
  if (n.attrs.depth < 0) fail(name_of(n), "rows must be >= 0 (0: the batch of x), got " + std::to_string(n.attrs.depth));
  // rows: a known batch for a stateful layer's state (the kernel compares it with x's).
  n.shape = {n.attrs.depth > 0 ? n.attrs.depth : x.shape[0], x.shape[2]};
}

void sequence_end_grad_shape(Node& n, const std::vector<Node>& nodes) {
  if (n.inputs.size() != 2 && n.inputs.size() != 3)
    fail(name_of(n), "expects g (N, W), like (N, T, ...) and optionally lengths, got " +
                         std::to_string(n.inputs.size()) + " inputs");
  const Node& g = input(n, nodes, 0);
  const Node& like = input(n, nodes, 1);
  require_dtype(n, g, DType::F32, "g");
  if (g.shape.size() != 2 || like.shape.size() != 3 || like.shape[0] != g.shape[0])
    fail(name_of(n), "expects g (N, W) and like (N, T, ...), got " + shape_str(g.shape) + " and " +
                         shape_str(like.shape));
  check_lengths(n, nodes, 2, g.shape[0]);
  n.shape = {g.shape[0], like.shape[1], g.shape[1]};
}

int columns(Graph& gr, int x, int64_t start, int64_t width) {
  Attrs part;
  part.axis = 2;
  part.start = start;
  part.end = start + width;
  return gr.op(OpKind::Slice, {x}, part);
}

int sequence_end(Graph& gr, int x, int lengths, bool reverse) {
  Attrs at;
  at.reverse = reverse;
  std::vector<int> in = {x};
  if (lengths >= 0) in.push_back(lengths);
  return gr.op(OpKind::SequenceEnd, in, at);
}

// sum over n and t of a[n, t]^T b[n, t]: (A, B) from a (N, T, A) and b (N, T, B).
int product_over_steps(Graph& gr, int a, int b) { return gr.sum(gr.matmul(a, b, true, false), {0}); }

// The rows' gradients (N, T, C) summed into a table of `rows` rows at their ids (N, T).
int scatter_rows(Graph& gr, int grads, int ids, int64_t rows) {
  Attrs at;
  at.depth = rows;
  return gr.op(OpKind::ScatterAdd, {grads, ids}, at);
}

void vjp_recurrence(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  Parsed p = parse(gr.node(y), gr.nodes(), false);
  const RecurrentOperands& at = p.at;
  if (p.layout.lean) {
    // A lean recurrence saved no gates: run the full one again, and widen g to its columns.
    Attrs full = v.attrs;
    full.lean = full.sequence_only = false;
    const int64_t lean_width = p.layout.width();
    p.layout.lean = p.layout.sequence_only = false;
    y = gr.op(OpKind::Recurrence, v.in, full);
    Attrs wider;
    wider.axis = 2;
    wider.end = p.layout.width() - lean_width;
    g = gr.op(OpKind::Pad, {g}, wider);
  }
  const RecurrentLayout& l = p.layout;
  // A gradient reaching h alone comes padded with zeros for the other columns: the kernel
  // reads h's columns unpadded instead of a buffer as wide as y.
  const Node& padded = gr.node(g);
  if (padded.op == OpKind::Pad && padded.attrs.axis == 2 && padded.attrs.start == 0 &&
      gr.node(padded.inputs[0]).shape.size() == 3 && gr.node(padded.inputs[0]).shape[2] == l.out)
    g = padded.inputs[0];
  std::vector<int> in = {g, y, v.in[at.h0]};
  if (at.c0 >= 0) in.push_back(v.in[at.c0]);
  in.push_back(v.in[at.w_hh]);
  if (at.w_hr >= 0) in.push_back(v.in[at.w_hr]);
  const int lengths = at.lengths >= 0 ? v.in[at.lengths] : -1;
  if (lengths >= 0) in.push_back(lengths);
  Attrs same;
  same.cell = v.attrs.cell;
  same.reverse = v.attrs.reverse;
  const int grads = gr.op(OpKind::RecurrenceGrad, in, same);
  const int64_t h = l.hidden;
  const int d_xp = columns(gr, grads, 0, l.gate_width());
  // A table's rows take the gradients of the steps that picked them (the ids take none); x
  // projected in the loop takes d(xp) w_ih, and w_ih the product of d(xp) and x over all steps.
  if (at.ids >= 0) {
    dx[at.xp] = scatter_rows(gr, d_xp, v.in[at.ids], shape_of(gr, v.in[at.xp])[0]);
  } else if (at.w_ih >= 0) {
    dx[at.xp] = gr.matmul(d_xp, v.in[at.w_ih]);
    dx[at.w_ih] = product_over_steps(gr, d_xp, v.in[at.xp]);
  } else {
    dx[at.xp] = d_xp;
  }
  // A table's gradient already sums the steps' d(xp) into its V rows: the bias's is the sum
  // of those few rows instead of a second pass over all N * T.
  if (at.bias >= 0) dx[at.bias] = at.ids >= 0 ? gr.sum(dx[at.xp], {0}) : gr.sum(d_xp, {0, 1});
  int d_hidden_side = d_xp;  // the gradient of the pre-activations w_hh multiplies into
  if (l.cell == Cell::Gru) {
    const int dhn = columns(gr, grads, l.dhn_col(), h);
    Attrs last;
    last.axis = 2;
    d_hidden_side = gr.op(OpKind::Concat, {columns(gr, grads, 0, 2 * h), dhn}, last);
    dx[at.b_hn] = gr.sum(dhn, {0, 1});
  }
  dx[at.w_hh] = product_over_steps(gr, d_hidden_side, columns(gr, grads, l.hprev_col(), l.out));
  // The first step a sequence runs: t = 0 forward, its last valid step in reverse.
  dx[at.h0] = sequence_end(gr, columns(gr, grads, l.dhprev_col(), l.out), lengths, !v.attrs.reverse);
  if (at.c0 >= 0) dx[at.c0] = sequence_end(gr, columns(gr, grads, l.dcprev_col(), h), lengths, !v.attrs.reverse);
  if (at.w_hr >= 0)
    dx[at.w_hr] = product_over_steps(gr, columns(gr, grads, l.dhout_col(), l.out), columns(gr, grads, l.hraw_col(), h));
}

void vjp_sequence_end(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  std::vector<int> in = {g, v.in[0]};
  if (v.in.size() == 2) in.push_back(v.in[1]);
  Attrs same;
  same.reverse = v.attrs.reverse;
  dx[0] = gr.op(OpKind::SequenceEndGrad, in, same);
}

}  // namespace

std::vector<OpDef> recurrent_op_defs() {
  const auto cell = attr("cell", &Attrs::cell);
  const auto reverse = attr("reverse", &Attrs::reverse);
  return {
      {OpKind::Recurrence, "recurrence", -1, {cell, reverse, attr("lean", &Attrs::lean), attr("sequence_only", &Attrs::sequence_only),
        attr("project_input", &Attrs::project_input)},
       recurrence_shape,
       Gradient::Rule, vjp_recurrence},
      {OpKind::RecurrenceGrad, "recurrence_grad", -1, {cell, reverse}, recurrence_grad_shape, Gradient::None},
      {OpKind::SequenceEnd, "sequence_end", -1, {reverse, attr("rows", &Attrs::depth)}, sequence_end_shape,
       Gradient::Rule, vjp_sequence_end},
      {OpKind::SequenceEndGrad, "sequence_end_grad", -1, {reverse}, sequence_end_grad_shape, Gradient::None},
  };
}

}  // namespace gometal
