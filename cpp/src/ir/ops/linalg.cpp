// Matrix products: 2-D, and batched (rank >= 3 on either side) with the batch dims
// broadcast as numpy and torch's matmul broadcast them.
#include <algorithm>

#include "ir/ops/op_support.h"

namespace gometal {
namespace {

using namespace ops;

// The batch dims of a batched product: each side's leading dims (all but the last two),
// aligned on the right; equal dims stay, a 1 stretches. A symbol matches only itself.
Shape batch_dims(const Node& n, const Shape& a, const Shape& b) {
  const Shape lead_a(a.begin(), a.end() - 2), lead_b(b.begin(), b.end() - 2);
  const size_t rank = std::max(lead_a.size(), lead_b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - lead_a.size() ? 1 : lead_a[i - (rank - lead_a.size())];
    const int64_t db = i < rank - lead_b.size() ? 1 : lead_b[i - (rank - lead_b.size())];
    if (da == db || db == 1) out[i] = da;
    else if (da == 1) out[i] = db;
    else
      fail(name_of(n), "batch dimensions " + shape_str(lead_a) + " and " + shape_str(lead_b) + " of " +
                           shape_str(a) + " x " + shape_str(b) + " cannot be broadcast together");
  }
  return out;
}

void matmul_shape(Node& n, const std::vector<Node>& nodes) {
  const Node &an = input(n, nodes, 0), &bn = input(n, nodes, 1);
  n.dtype = common_dtype(n, nodes);
  require_float(n, an);
  const Shape &a = an.shape, &b = bn.shape;
  if (a.size() < 2 || b.size() < 2)
    fail(name_of(n), "expects operands of rank 2 or more, got " + shape_str(a) + " x " + shape_str(b));
  const size_t ra = a.size(), rb = b.size();
  const int64_t m = n.attrs.transpose_a ? a[ra - 1] : a[ra - 2];
  const int64_t ka = n.attrs.transpose_a ? a[ra - 2] : a[ra - 1];
  const int64_t kb = n.attrs.transpose_b ? b[rb - 1] : b[rb - 2];
  const int64_t nn = n.attrs.transpose_b ? b[rb - 2] : b[rb - 1];
  if (ka != kb)
    fail(name_of(n), "inner dimensions differ: " + shape_str(a) + (n.attrs.transpose_a ? "^T" : "") + " x " +
                         shape_str(b) + (n.attrs.transpose_b ? "^T" : ""));
  n.shape = ra == 2 && rb == 2 ? Shape{} : batch_dims(n, a, b);
  n.shape.push_back(m);
  n.shape.push_back(nn);
}

// C = op(A) op(B): dop(A) = G op(B)^T, dop(B) = op(A)^T G, then undo each op. In a batched
// product each gradient is summed over the batch dims its operand was broadcast along.
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
  if (v.shape.size() == 2) return;
  dx[0] = gr.reduce_to(dx[0], shape_of(gr, a));
  dx[1] = gr.reduce_to(dx[1], shape_of(gr, b));
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
