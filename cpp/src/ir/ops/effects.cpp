// Effects: ops that write variables instead of producing a value. Each runs after every
// other reader of what it writes (the scheduler's rule) and at most once per function.
#include "ir/ops/op_support.h"

namespace gometal {
namespace {

using namespace ops;

void require_variable(const Node& n, const Node& in, size_t index) {
  if (in.op != OpKind::Variable)
    fail(name_of(n), "input " + std::to_string(index) + " must be a variable, got '" + std::string(op_name(in.op)) +
                         "'");
}

void assign_shape(Node& n, const std::vector<Node>& nodes) {
  const Node& var = input(n, nodes, 0);
  if (var.op != OpKind::Variable)
    fail(name_of(n), "first input must be a variable, got '" + std::string(op_name(var.op)) + "'");
  const Node& value = input(n, nodes, 1);
  if (value.shape != var.shape)
    fail(name_of(n), "value of shape " + shape_str(value.shape) + " does not match variable '" + var.attrs.name +
                         "' of shape " + shape_str(var.shape));
  if (value.dtype != var.dtype)
    fail(name_of(n), "value of dtype " + std::string(dtype_name(value.dtype)) + " does not match variable '" +
                         var.attrs.name + "' of dtype " + std::string(dtype_name(var.dtype)));
  n.shape = var.shape;
  n.dtype = var.dtype;
}

// (param, exp_avg, exp_avg_sq, grad, step_size, sqrt(bias_correction2)[, lr][, finite]): lr
// comes with decoupled_weight_decay (AdamW's decay 1 - lr * wd); with the optional last input,
// a scalar 0/1, nothing is written unless it is 1 (loss scaling's step skip), so the fused
// kernel serves scaled training too.
void adam_shape(Node& n, const std::vector<Node>& nodes) {
  const size_t base = n.attrs.decoupled_weight_decay ? 7 : 6;
  if (n.inputs.size() != base && n.inputs.size() != base + 1)
    fail(name_of(n), "expects " + std::to_string(base) +
                         " inputs (param, exp_avg, exp_avg_sq, grad, step_size, sqrt_bias_correction2" +
                         (base == 7 ? ", lr" : "") + ") or " + std::to_string(base + 1) +
                         " (and a finite flag), got " + std::to_string(n.inputs.size()));
  const Node& p = input(n, nodes, 0);
  for (size_t i = 0; i < 3; ++i) {
    const Node& slot = input(n, nodes, i);
    require_variable(n, slot, i);
    if (slot.shape != p.shape)
      fail(name_of(n), "slot '" + slot.attrs.name + "' of shape " + shape_str(slot.shape) +
                           " does not match parameter '" + p.attrs.name + "' of shape " + shape_str(p.shape));
  }
  if (n.inputs[0] == n.inputs[1] || n.inputs[0] == n.inputs[2] || n.inputs[1] == n.inputs[2])
    fail(name_of(n), "parameter and slots must be three different variables");
  for (size_t i = 0; i < 3; ++i)
    if (n.inputs[3] == n.inputs[i]) fail(name_of(n), "the gradient cannot be one of the variables it updates");
  if (input(n, nodes, 3).shape != p.shape)
    fail(name_of(n), "gradient of shape " + shape_str(input(n, nodes, 3).shape) + " does not match parameter '" +
                         p.attrs.name + "' of shape " + shape_str(p.shape));
  for (size_t i = 4; i < n.inputs.size(); ++i)
    if (!input(n, nodes, i).shape.empty())
      fail(name_of(n), "input " + std::to_string(i) + " must be a scalar, got shape " +
                           shape_str(input(n, nodes, i).shape));
  for (size_t i = 0; i < n.inputs.size(); ++i) require_dtype(n, input(n, nodes, i), DType::F32, "inputs");
  n.shape = p.shape;
}

std::vector<int> assign_writes(const Node& n) { return {n.inputs[0]}; }
std::vector<int> adam_writes(const Node& n) { return {n.inputs[0], n.inputs[1], n.inputs[2]}; }

// torch.optim.Adam's update in primitives, in the fused kernel's order of operations:
//   g += wd p;  m += (1 - b1)(g - m);  v = b2 v + (1 - b2) g g;
//   p -= step_size * m / (sqrt(v) / sqrt_bc2 + eps)
// decoupled_weight_decay (torch.optim.AdamW): no L2 term; p * (1 - lr wd) takes p's place.
// With a finite flag, each write keeps the old value unless the flag is 1.
std::vector<int> decompose_adam(Graph& gr, int id) {
  const View v = view(gr, id);
  const bool decoupled = v.attrs.decoupled_weight_decay;
  const int p = v.in[0], m = v.in[1], vs = v.in[2], step_size = v.in[4], bc2 = v.in[5];
  const size_t flag_at = decoupled ? 7 : 6;
  int grad = v.in[3], start = p;
  // The kernel forms 1 - beta in float32; so do these constants.
  const float one_minus_b1 = 1.0f - v.attrs.beta1, one_minus_b2 = 1.0f - v.attrs.beta2;
  if (decoupled)
    start = gr.mul(p, gr.sub(k(gr, 1.0f), gr.mul(v.in[6], k(gr, v.attrs.weight_decay))));
  else if (v.attrs.weight_decay != 0.0f)
    grad = gr.add(grad, gr.mul(k(gr, v.attrs.weight_decay), p));
  const int new_m = gr.add(m, gr.mul(k(gr, one_minus_b1), gr.sub(grad, m)));
  const int new_v = gr.add(gr.mul(k(gr, v.attrs.beta2), vs), gr.mul(gr.mul(k(gr, one_minus_b2), grad), grad));
  const int denom = gr.add(gr.div(gr.unary(OpKind::Sqrt, new_v), bc2), k(gr, v.attrs.eps));
  const int new_p = gr.sub(start, gr.mul(step_size, gr.div(new_m, denom)));
  auto write = [&](int var, int value) {
    if (v.in.size() > flag_at) value = sel(gr, v.in[flag_at], value, var);
    return gr.assign(var, value);
  };
  return {write(m, new_m), write(vs, new_v), write(p, new_p)};
}

}  // namespace

std::vector<OpDef> effect_op_defs() {
  return {
      {OpKind::Assign, "assign", 2, {}, assign_shape, Gradient::None, nullptr, trait::kEffect, assign_writes},
      {OpKind::AdamUpdate, "adam_update", -1,
       {attr("beta1", &Attrs::beta1), attr("beta2", &Attrs::beta2), attr("eps", &Attrs::eps),
        attr("weight_decay", &Attrs::weight_decay), attr("decoupled_weight_decay", &Attrs::decoupled_weight_decay)},
       adam_shape, Gradient::None, nullptr, trait::kEffect, adam_writes, nullptr, decompose_adam},
  };
}

}  // namespace gometal
