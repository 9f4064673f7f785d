// Scaled dot-product attention as one fused op, and the ops its gradient is made of.
//   attention(q, k, v[, mask])        softmax(scale q k^T + mask [+ causal]) (dropout) v, and with
//                                     with_lse each row's log-sum-exp as an extra last column
//   attention_lse(q, k[, mask])       each query row's log-sum-exp of those scores
//   attention_grad_q / _kv(q, k, v, g, lse, delta[, mask])   dq, and dk and dv stacked
//   attention_grad(same inputs)       dq, dk and dv stacked in one pass, when Tq = Tk
// The backward ops recompute the probabilities from the saved log-sum-exp, so no (Tq, Tk)
// tensor outlives a kernel. Each op's decomposition into primitives is its reference.
#include <cfloat>
#include <cmath>

#include "ir/ops/op_support.h"

namespace gometal {
namespace {

using namespace ops;

struct Dims {
  int64_t n, h, tq, tk, d;
};

// q (N, H, Tq, D), k (N, H, Tk, D) and, when given, v (N, H, Tk, D): float32, agreeing.
Dims check_qkv(const Node& n, const Node& q, const Node& k, const Node* v) {
  for (const Node* in : {&q, &k, v}) {
    if (in == nullptr) continue;
    require_dtype(n, *in, DType::F32, "q, k and v");
    if (in->shape.size() != 4)
      fail(name_of(n), "expects q, k and v of rank 4 (N, H, T, D), got " + shape_str(in->shape));
  }
  const Shape &qs = q.shape, &ks = k.shape;
  if (ks[0] != qs[0] || ks[1] != qs[1] || ks[3] != qs[3])
    fail(name_of(n), "k " + shape_str(ks) + " must match q " + shape_str(qs) + " in N, H and D");
  if (v != nullptr && v->shape != ks)
    fail(name_of(n), "v " + shape_str(v->shape) + " must have k's shape " + shape_str(ks));
  return {qs[0], qs[1], qs[2], ks[2], qs[3]};
}

// The optional additive mask broadcasts to (N, H, Tq, Tk).
void check_mask(const Node& n, const Node& mask, const Dims& d) {
  require_dtype(n, mask, DType::F32, "an additive mask");
  const Shape scores = {d.n, d.h, d.tq, d.tk};
  bool ok = mask.shape.size() <= 4;
  for (size_t i = 0; ok && i < mask.shape.size(); ++i) {
    const int64_t m = mask.shape[mask.shape.size() - 1 - i], s = scores[3 - i];
    ok = m == 1 || m == s;
  }
  if (!ok)
    fail(name_of(n), "mask of shape " + shape_str(mask.shape) + " does not broadcast to the scores' shape " +
                         shape_str(scores) + " (N, H, Tq, Tk)");
}

void check_attrs(const Node& n, bool with_dropout) {
  if (!(n.attrs.scale >= 0.0f) || !std::isfinite(n.attrs.scale))
    fail(name_of(n), "scale must be a finite number >= 0 (0: 1/sqrt(D)), got " + std::to_string(n.attrs.scale));
  if (!with_dropout && n.attrs.dropout != 0.0f) fail(name_of(n), "takes no dropout");
  if (!(n.attrs.dropout >= 0.0f && n.attrs.dropout < 1.0f))
    fail(name_of(n), "dropout must be in [0, 1), got " + std::to_string(n.attrs.dropout));
}

void attention_shape(Node& n, const std::vector<Node>& nodes) {
  if (n.inputs.size() != 3 && n.inputs.size() != 4)
    fail(name_of(n), "expects 3 inputs (q, k, v) or 4 (and an additive mask), got " + std::to_string(n.inputs.size()));
  const Dims d = check_qkv(n, input(n, nodes, 0), input(n, nodes, 1), &input(n, nodes, 2));
  if (n.inputs.size() == 4) check_mask(n, input(n, nodes, 3), d);
  check_attrs(n, true);
  n.shape = {d.n, d.h, d.tq, n.attrs.with_lse ? d.d + 1 : d.d};
}

void lse_shape(Node& n, const std::vector<Node>& nodes) {
  if (n.inputs.size() != 2 && n.inputs.size() != 3)
    fail(name_of(n), "expects 2 inputs (q, k) or 3 (and an additive mask), got " + std::to_string(n.inputs.size()));
  const Dims d = check_qkv(n, input(n, nodes, 0), input(n, nodes, 1), nullptr);
  if (n.inputs.size() == 3) check_mask(n, input(n, nodes, 2), d);
  check_attrs(n, false);
  n.shape = {d.n, d.h, d.tq};
}

// (q, k, v, g, lse, delta[, mask]): g has the output's shape, lse and delta are (N, H, Tq).
Dims grad_inputs(Node& n, const std::vector<Node>& nodes) {
  if (n.inputs.size() != 6 && n.inputs.size() != 7)
    fail(name_of(n), "expects 6 inputs (q, k, v, g, lse, delta) or 7 (and an additive mask), got " +
                         std::to_string(n.inputs.size()));
  const Node& q = input(n, nodes, 0);
  const Dims d = check_qkv(n, q, input(n, nodes, 1), &input(n, nodes, 2));
  const Node& g = input(n, nodes, 3);
  require_dtype(n, g, DType::F32, "the output gradient");
  if (g.shape != q.shape) fail(name_of(n), "output gradient " + shape_str(g.shape) + " must have q's shape " + shape_str(q.shape));
  for (size_t i : {size_t{4}, size_t{5}}) {
    const Node& row = input(n, nodes, i);
    require_dtype(n, row, DType::F32, "row statistics");
    if (row.shape != Shape{d.n, d.h, d.tq})
      fail(name_of(n), std::string(i == 4 ? "lse" : "delta") + " of shape " + shape_str(row.shape) +
                           " must be (N, H, Tq) " + shape_str({d.n, d.h, d.tq}));
  }
  if (n.inputs.size() == 7) check_mask(n, input(n, nodes, 6), d);
  check_attrs(n, true);
  return d;
}

void grad_q_shape(Node& n, const std::vector<Node>& nodes) {
  const Dims d = grad_inputs(n, nodes);
  n.shape = {d.n, d.h, d.tq, d.d};
}

void grad_kv_shape(Node& n, const std::vector<Node>& nodes) {
  const Dims d = grad_inputs(n, nodes);
  n.shape = {2, d.n, d.h, d.tk, d.d};
}

void grad_shape(Node& n, const std::vector<Node>& nodes) {
  const Dims d = grad_inputs(n, nodes);
  if (d.tq != d.tk)
    fail(name_of(n), "stacks dq, dk and dv, so it needs as many queries as keys, got Tq " +
                         shape_str({d.tq}) + " and Tk " + shape_str({d.tk}) +
                         "; attention_grad_q and attention_grad_kv take any lengths");
  n.shape = {3, d.n, d.h, d.tq, d.d};
}

// ---- the decompositions: batched matrix products, a softmax, and the same for its VJP ----

float scale_of(const Attrs& a, int64_t d) {
  return a.scale > 0.0f ? a.scale : 1.0f / std::sqrt(static_cast<float>(d));
}

// x y^T over the last two axes: (N, H, Tx, Ty).
int pair_dot(Graph& gr, int x, int y) { return gr.matmul(x, y, false, true); }

// a (N, H, A, B) times y (N, H, B, D), or, with over_rows, a^T times y (N, H, A, D).
int weigh(Graph& gr, int a, int y, bool over_rows) { return gr.matmul(a, y, over_rows, false); }

// scale q k^T + mask, with -inf above the diagonal when causal (query i sees keys j <= i).
int scores(Graph& gr, const View& v, int mask) {
  const Shape qs = shape_of(gr, v.in[0]), ks = shape_of(gr, v.in[1]);
  int s = gr.mul(pair_dot(gr, v.in[0], v.in[1]), k(gr, scale_of(v.attrs, qs[3])));
  if (mask >= 0) s = gr.add(s, mask);
  if (v.attrs.causal) {
    if (is_symbol(qs[2]) || is_symbol(ks[2]))
      fail(op_name(v.op), "the decomposition of a causal attention needs static sequence lengths, got q " +
                              shape_str(qs) + " and k " + shape_str(ks));
    std::vector<float> bias(static_cast<size_t>(qs[2] * ks[2]), 0.0f);
    for (int64_t i = 0; i < qs[2]; ++i)
      for (int64_t j = i + 1; j < ks[2]; ++j) bias[static_cast<size_t>(i * ks[2] + j)] = -INFINITY;
    s = gr.add(s, gr.constant({qs[2], ks[2]}, std::move(bias)));
  }
  return s;
}

// The row maximum, kept finite so that a row whose every key is masked gives exp(-inf) = 0.
int row_max(Graph& gr, int s) { return gr.op(OpKind::Maximum, {gr.max(s, {3}, true), k(gr, -FLT_MAX)}); }

int lse_of(Graph& gr, int s) {
  const int m = row_max(gr, s);
  const int l = gr.sum(gr.unary(OpKind::Exp, gr.sub(s, m)), {3}, true);
  const int lse = gr.add(m, gr.unary(OpKind::Log, gr.op(OpKind::Maximum, {l, k(gr, FLT_MIN)})));
  const Shape ls = shape_of(gr, lse);
  return gr.reshape(lse, {ls[0], ls[1], ls[2]});
}

// Inverted dropout on the probabilities: kept ones scaled by 1 / (1 - p).
int drop(Graph& gr, int p, float rate) {
  const int keep = cmp(gr, OpKind::GreaterEqual, gr.op(OpKind::RandomUniform, {p}), k(gr, rate));
  return gr.mul(gr.mul(p, k(gr, 1.0f / (1.0f - rate))), keep);
}

int optional_input(const View& v, size_t index) { return v.in.size() > index ? v.in[index] : -1; }

std::vector<int> decompose_attention(Graph& gr, int id) {
  const View v = view(gr, id);
  const int s = scores(gr, v, optional_input(v, 3));
  const int e = gr.unary(OpKind::Exp, gr.sub(s, row_max(gr, s)));
  // The sum is >= 1 unless every key is masked, when e is all zeros: the row stays 0.
  int p = gr.div(e, gr.op(OpKind::Maximum, {gr.sum(e, {3}, true), k(gr, 1.0f)}));
  if (v.attrs.dropout > 0.0f) p = drop(gr, p, v.attrs.dropout);
  const int out = weigh(gr, p, v.in[2], false);
  if (!v.attrs.with_lse) return {out};
  const Shape qs = shape_of(gr, v.in[0]);
  Attrs last;
  last.axis = 3;
  return {gr.op(OpKind::Concat, {out, gr.reshape(lse_of(gr, s), {qs[0], qs[1], qs[2], 1})}, last)};
}

std::vector<int> decompose_lse(Graph& gr, int id) {
  const View v = view(gr, id);
  return {lse_of(gr, scores(gr, v, optional_input(v, 2)))};
}

// P = exp(S - lse); dS = P * (g v^T - delta): the softmax's VJP with the saved statistics.
struct Recomputed {
  int p, ds;
};

Recomputed recompute(Graph& gr, const View& v) {
  if (v.attrs.dropout > 0.0f)
    fail(op_name(v.op), "the decomposition cannot redraw the forward pass's dropout mask; "
                        "it needs the fused kernel when dropout > 0");
  const int s = scores(gr, v, optional_input(v, 6));
  const Shape ls = shape_of(gr, v.in[4]);
  const Shape row = {ls[0], ls[1], ls[2], 1};
  const int p = gr.unary(OpKind::Exp, gr.sub(s, gr.reshape(v.in[4], row)));
  const int dp = pair_dot(gr, v.in[3], v.in[2]);
  return {p, gr.mul(p, gr.sub(dp, gr.reshape(v.in[5], row)))};
}

std::vector<int> decompose_grad_q(Graph& gr, int id) {
  const View v = view(gr, id);
  const Recomputed r = recompute(gr, v);
  const float scale = scale_of(v.attrs, shape_of(gr, v.in[0])[3]);
  return {gr.mul(weigh(gr, r.ds, v.in[1], false), k(gr, scale))};
}

// dq (with_q), then dk and dv, stacked along a new first axis.
int stacked_grads(Graph& gr, int id, bool with_q) {
  const View v = view(gr, id);
  const Recomputed r = recompute(gr, v);
  const Shape ks = shape_of(gr, v.in[1]);
  const float scale = scale_of(v.attrs, ks[3]);
  const Shape stacked = {1, ks[0], ks[1], ks[2], ks[3]};
  std::vector<int> parts;
  if (with_q) parts.push_back(gr.reshape(gr.mul(weigh(gr, r.ds, v.in[1], false), k(gr, scale)), stacked));
  parts.push_back(gr.reshape(gr.mul(weigh(gr, r.ds, v.in[0], true), k(gr, scale)), stacked));
  parts.push_back(gr.reshape(weigh(gr, r.p, v.in[3], true), stacked));
  Attrs along_first;
  along_first.axis = 0;
  return gr.op(OpKind::Concat, parts, along_first);
}

std::vector<int> decompose_grad_kv(Graph& gr, int id) { return {stacked_grads(gr, id, false)}; }
std::vector<int> decompose_grad(Graph& gr, int id) { return {stacked_grads(gr, id, true)}; }

// ---- the gradient: dq from one op, dk and dv stacked from another; none for the mask ----

int slice_of(Graph& gr, int x, int64_t axis, int64_t start, int64_t end) {
  Attrs part;
  part.axis = axis;
  part.start = start;
  part.end = end;
  return gr.op(OpKind::Slice, {x}, part);
}

// With with_lse the forward pass saved the log-sum-exps (its last column): the backward pass
// reads them, and their own gradient g_lse joins through dS = P (dP - delta + g_lse).
// Without, attention_lse recomputes them.
void vjp_attention(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  const bool masked = v.in.size() == 4;
  const Shape qs = shape_of(gr, v.in[0]), ks = shape_of(gr, v.in[1]);
  const Shape rows = {qs[0], qs[1], qs[2]};
  int out = y, g_out = g, lse = -1;
  if (v.attrs.with_lse) {
    out = slice_of(gr, y, 3, 0, qs[3]);
    g_out = slice_of(gr, g, 3, 0, qs[3]);
    lse = gr.reshape(slice_of(gr, y, 3, qs[3], qs[3] + 1), rows);
  } else {
    Attrs stats;
    stats.causal = v.attrs.causal;
    stats.scale = v.attrs.scale;
    std::vector<int> qk = {v.in[0], v.in[1]};
    if (masked) qk.push_back(v.in[3]);
    lse = gr.op(OpKind::AttentionLse, qk, stats);
  }
  int delta = gr.sum(gr.mul(g_out, out), {3});  // rowsum(dO * O) = rowsum(P * dP)
  if (v.attrs.with_lse) delta = gr.sub(delta, gr.reshape(slice_of(gr, g, 3, qs[3], qs[3] + 1), rows));
  Attrs grads = v.attrs;
  grads.with_lse = false;
  grads.stream = y;  // the backward kernels redraw the forward node's dropout mask
  std::vector<int> in = {v.in[0], v.in[1], v.in[2], g_out, lse, delta};
  if (masked) in.push_back(v.in[3]);
  // Self-attention (Tq = Tk) takes one pass for all three; otherwise dq and dk, dv apart.
  if (qs[2] == ks[2]) {
    const int all = gr.op(OpKind::AttentionGrad, in, grads);
    for (int64_t i = 0; i < 3; ++i) dx[i] = gr.reshape(slice_of(gr, all, 0, i, i + 1), i == 0 ? qs : ks);
    return;
  }
  dx[0] = gr.op(OpKind::AttentionGradQ, in, grads);
  const int kv = gr.op(OpKind::AttentionGradKV, in, grads);
  for (int64_t i = 0; i < 2; ++i) dx[1 + i] = gr.reshape(slice_of(gr, kv, 0, i, i + 1), ks);
}

}  // namespace

std::vector<OpDef> attention_op_defs() {
  const auto causal = attr("causal", &Attrs::causal);
  const auto scale = attr("scale", &Attrs::scale);
  const auto dropout = attr("dropout", &Attrs::dropout);
  const auto stream = attr("stream", &Attrs::stream);
  return {
      {OpKind::Attention, "attention", -1, {causal, scale, dropout, attr("with_lse", &Attrs::with_lse)},
       attention_shape, Gradient::Rule, vjp_attention,
       trait::kRandom, nullptr, nullptr, decompose_attention},
      {OpKind::AttentionLse, "attention_lse", -1, {causal, scale}, lse_shape, Gradient::None, nullptr, 0, nullptr,
       nullptr, decompose_lse},
      {OpKind::AttentionGradQ, "attention_grad_q", -1, {causal, scale, dropout, stream}, grad_q_shape,
       Gradient::None, nullptr, trait::kRandom, nullptr, nullptr, decompose_grad_q},
      {OpKind::AttentionGradKV, "attention_grad_kv", -1, {causal, scale, dropout, stream}, grad_kv_shape,
       Gradient::None, nullptr, trait::kRandom, nullptr, nullptr, decompose_grad_kv},
      {OpKind::AttentionGrad, "attention_grad", -1, {causal, scale, dropout, stream}, grad_shape, Gradient::None,
       nullptr, trait::kRandom, nullptr, nullptr, decompose_grad},
  };
}

}  // namespace gometal
