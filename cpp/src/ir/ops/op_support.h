// What the op family files share: messages that name the op, shape arithmetic for rules,
// and small graph-building helpers for VJP rules.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "gometal/ir.h"
#include "ir/op_registry.h"
#include "ir/shape_inference.h"

namespace gometal::ops {

[[noreturn]] void fail(std::string_view op, const std::string& what);

inline std::string_view name_of(const Node& n) { return op_name(n.op); }

// Resolves a possibly negative axis against `rank`, or fails naming the op.
int64_t norm_axis(int64_t axis, size_t rank, std::string_view op);

// The product of the known dims of `s`; `symbols` gets its symbolic dims, in order.
int64_t known_product(const Shape& s, std::vector<int64_t>* symbols);

// Fails unless input `in` has a float dtype (float32, float16, bfloat16), naming the op and
// the dtype it got.
void require_float(const Node& n, const Node& in);

// Fails unless every input of n has the same dtype, naming the op and both dtypes; returns it.
DType common_dtype(const Node& n, const std::vector<Node>& nodes);

// Fails unless `in` has dtype `want`, naming the op, the input's role and both dtypes.
void require_dtype(const Node& n, const Node& in, DType want, std::string_view role);

// The input nodes of n, for rules: in(n, nodes, i).
inline const Node& input(const Node& n, const std::vector<Node>& nodes, size_t i) { return nodes[n.inputs[i]]; }

// Attribute specs, one line per attribute in an entry.
inline AttrSpec attr(const char* key, int64_t Attrs::*field) { return {key, field}; }
inline AttrSpec attr(const char* key, std::vector<int64_t> Attrs::*field) { return {key, field}; }
inline AttrSpec attr(const char* key, float Attrs::*field) { return {key, field}; }
inline AttrSpec attr(const char* key, bool Attrs::*field) { return {key, field}; }
inline AttrSpec attr(const char* key, DType Attrs::*field) { return {key, field}; }
inline AttrSpec attr(const char* key, std::string Attrs::*field) { return {key, field}; }

// ---- for VJP rules ----

// A node's fields copied out, safe to keep while the rule adds nodes.
struct View {
  OpKind op;
  std::vector<int> in;
  Attrs attrs;
  Shape shape;
};
View view(const Graph& gr, int id);

inline Shape shape_of(const Graph& gr, int id) { return gr.node(id).shape; }
inline int k(Graph& gr, float v) { return gr.constant(v); }
inline int cmp(Graph& gr, OpKind op, int a, int b) { return gr.op(op, {a, b}); }
inline int sel(Graph& gr, int c, int a, int b) { return gr.op(OpKind::Select, {c, a, b}); }

// value / (the number of elements `axes` of shape xs span); that count is a constant unless
// the batch dim is among the axes, when it is counted at run time.
int divide_by_count(Graph& gr, int value, const Shape& xs, const std::vector<int64_t>& axes);

}  // namespace gometal::ops
