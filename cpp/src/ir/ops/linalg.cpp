// Matrix products.
#include "ir/ops/op_support.h"

namespace gometal {
namespace {

using namespace ops;

void matmul_shape(Node& n, const std::vector<Node>& nodes) {
  const Node &an = input(n, nodes, 0), &bn = input(n, nodes, 1);
  n.dtype = common_dtype(n, nodes);
  require_float(n, an);
  const Shape &a = an.shape, &b = bn.shape;
  if (a.size() != 2 || b.size() != 2)
    fail(name_of(n), "expects 2-D operands, got " + shape_str(a) + " x " + shape_str(b));
  const int64_t m = n.attrs.transpose_a ? a[1] : a[0];
  const int64_t ka = n.attrs.transpose_a ? a[0] : a[1];
  const int64_t kb = n.attrs.transpose_b ? b[1] : b[0];
  const int64_t nn = n.attrs.transpose_b ? b[0] : b[1];
  if (ka != kb)
    fail(name_of(n), "inner dimensions differ: " + shape_str(a) + (n.attrs.transpose_a ? "^T" : "") + " x " +
                         shape_str(b) + (n.attrs.transpose_b ? "^T" : ""));
  n.shape = {m, nn};
}

// C = op(A) op(B): dop(A) = G op(B)^T, dop(B) = op(A)^T G, then undo each op.
void vjp_matmul(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  const int a = v.in[0], b = v.in[1];
  const bool ta = v.attrs.transpose_a, tb = v.attrs.transpose_b;
  if (!ta && !tb) {
    dx[0] = gr.matmul(g, b, false, true);
    dx[1] = gr.matmul(a, g, true, false);
  } else if (ta && !tb) {
    dx[0] = gr.matmul(b, g, false, true);
    dx[1] = gr.matmul(a, g, false, false);
  } else if (!ta && tb) {
    dx[0] = gr.matmul(g, b, false, false);
    dx[1] = gr.matmul(g, a, true, false);
  } else {
    dx[0] = gr.matmul(b, g, true, true);
    dx[1] = gr.matmul(g, a, true, true);
  }
}

}  // namespace

std::vector<OpDef> linalg_op_defs() {
  return {
      {OpKind::MatMul, "matmul", 2,
       {attr("transpose_a", &Attrs::transpose_a), attr("transpose_b", &Attrs::transpose_b)}, matmul_shape,
       Gradient::Rule, vjp_matmul},
  };
}

}  // namespace gometal
