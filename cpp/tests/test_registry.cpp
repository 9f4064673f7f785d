// The op registry is complete, and the CPU backend runs every op it lists: the checks a new
// op or a new backend must pass before anything else can use it.
#include <cstdio>
#include <stdexcept>
#include <string>

#include "backends/backend.h"
#include "ir/op_registry.h"

namespace {
int g_failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
  if (!ok) ++g_failures;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}
}  // namespace

int main() {
  using namespace gometal;
  const std::vector<std::string> problems = op_table_problems();
  for (const std::string& p : problems) std::printf("  registry: %s\n", p.c_str());
  check(problems.empty(), "every OpKind has one complete registry entry");

  // Every op's entry is reachable by its name, and every non-leaf op has a CPU kernel for
  // float32 inputs (the dtype every op takes today).
  auto cpu = make_cpu_backend();
  Graph g;
  const int x = g.input("x", {kBatch, 4});
  for (const OpDef& def : op_table()) {
    if (def.has(trait::kLeaf)) continue;
    check(op_from_name(def.name) == def.kind, std::string("op '") + def.name + "' is found by name");
    Node probe{def.kind, {}, {}, {}, DType::F32, {}};
    const int arity = def.arity > 0 ? def.arity : 1;
    for (int i = 0; i < arity; ++i) probe.inputs.push_back(def.kind == OpKind::OneHot ? g.input("labels" + std::string(def.name) + std::to_string(i), {kBatch}, DType::I32) : x);
    check(cpu->supports(g, probe), std::string("the CPU backend runs '") + def.name + "'");
  }

  // Attributes: an unknown key and a wrong type are refused, naming the op and the key.
  Attrs attrs;
  check(error_of([&] { set_attribute(OpKind::Sum, attrs, "axis", AttrValue{int64_t{1}}); }) ==
            "[sum] unknown attribute 'axis'; it takes: axes, keepdims",
        "an attribute the op does not take is refused");
  check(error_of([&] { set_attribute(OpKind::Exp, attrs, "axis", AttrValue{int64_t{1}}); }) ==
            "[exp] unknown attribute 'axis'; it takes none",
        "an op without attributes refuses any");
  check(error_of([&] { set_attribute(OpKind::MatMul, attrs, "transpose_a", AttrValue{int64_t{1}}); }) ==
            "[matmul] attribute 'transpose_a' must be a bool, got the int 1",
        "an attribute of the wrong type is refused");

  // A gradient through an op that has none is an error, not a silent zero.
  Graph h;
  const int in = h.input("x", {kBatch, 1, 4, 4});
  const int w = h.variable("w", {1, 1, 3, 3});
  const int y = h.op(OpKind::Conv2D, {in, w});
  Attrs grad_attrs;
  grad_attrs.ints = {1, 1, 3, 3};
  const int dw = h.op(OpKind::Conv2DWeightGrad, {in, y}, grad_attrs);
  const std::string second_order = error_of([&] { h.gradients(h.sum(dw, {}), {w}); });
  check(second_order.find("[gradients] the loss depends on 'conv2d_weight_grad'") == 0,
        "a gradient through a gradient op is refused: " + second_order);

  std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "OK", g_failures);
  return g_failures ? 1 : 0;
}
