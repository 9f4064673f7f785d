// The graph IR: primitives, shapes, dtypes, and the graph builder.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gometal {

// A shape is a list of dims. A negative dim is a named symbol whose size is fixed when a
// plan is compiled: kBatch (-1) is "batch"; dim_symbol("seq") names others (-2, -3, ...).
using Shape = std::vector<int64_t>;
inline constexpr int64_t kBatch = -1;
inline bool is_symbol(int64_t dim) { return dim < 0; }

// The symbol called `name` (process-wide, so a name means the same dim in every graph).
int64_t dim_symbol(const std::string& name);
std::string symbol_name(int64_t symbol);
// Concrete values of symbols: binding[-symbol - 1] is the size of `symbol`.
using SymbolBinding = std::vector<int64_t>;

// Element types. Every dtype can be an input, output, variable or constant and move through
// layout ops and casts; which ops a backend computes in which dtype is its support table.
enum class DType : uint8_t { F32, F16, BF16, I8, U8, I32, I64, Bool, kCount };

enum class OpKind : uint8_t {
  // leaves
  Input, Variable, Scalar, Constant,
  // unary elementwise
  Neg, Exp, Log, Tanh, Sigmoid, Relu, Abs, Sign, Sqrt, Rsqrt, Erf, Square,
  // bfloat16 emulation: round to bf16 (identity VJP); identity that rounds its gradient
  RoundBf16, RoundBf16Grad,
  // binary elementwise (numpy broadcasting)
  Add, Sub, Mul, Div, Maximum, Minimum, Pow,
  // exact GELU, x Phi(x), and its derivative times a gradient: gelu_grad(x, g) = g gelu'(x)
  Gelu, GeluGrad,
  Greater, GreaterEqual, Less, Equal,
  Select,
  // reductions
  Sum, Mean, Max, Argmax,
  ChannelMoments,  // per channel (axis 1): mean and biased variance over every other axis
  // layout
  Reshape, Transpose, BroadcastTo, Slice, Concat, Pad,
  // linear algebra
  MatMul,
  // indexing: rows of a table by int32 indices, and their sum back into a table
  Gather, ScatterAdd,
  // normalization over the last axis, dL/dx of each, and their weight and bias gradients
  LayerNorm, LayerNormGrad, RmsNorm, RmsNormGrad, LayerNormAffineGrad, RmsNormAffineGrad,
  // convolution and pooling (NCHW)
  Conv2D, Conv2DInputGrad, Conv2DWeightGrad, MaxPool2D, MaxPool2DGrad, AvgPool2D, AvgPool2DGrad,
  // misc
  OneHot, Cast, RandomUniform, StopGradient, Assign,
  // validation: raises from the step when its input leaves [low, high] (NaN included)
  CheckRange,
  // fused optimizer updates (effects, like assign)
  AdamUpdate,
  // scaled dot-product attention, fused, and the ops of its gradient
  Attention, AttentionLse, AttentionGradQ, AttentionGradKV, AttentionGrad,
  // recurrent layers: a layer's whole time loop, its backpropagation through time, and the
  // step each sequence ends at (final states) with its gradient
  Recurrence, RecurrenceGrad, SequenceEnd, SequenceEndGrad,
  // incremental decoding: attention over a cache prefix of run-time length, a write into a cache
  CachedAttention, CacheWrite,
  // positions 0..T-1 of an axis whose size T may be symbolic (a run-time sequence length)
  Positions,
  // int8 quantization: float <-> int8/uint8 per tensor, and the int8 dense and convolution
  // with int32 sums and a fused epilogue
  Quantize, Dequantize, QuantizedMatMul, QuantizedConv2D,
  // collectives across the ranks of a data-parallel job
  AllReduceMean, AllReduceMeanStart, AllReduceMeanWait, AllGather,
  kCount
};

struct Attrs {
  std::vector<int64_t> ints;  // axes (reductions), perm (transpose), shape (reshape, broadcast_to)
  int64_t axis = 0;           // argmax, slice, concat, pad
  int64_t start = 0;          // slice start / pad before
  int64_t end = 0;            // slice end / pad after
  int64_t depth = 0;          // one_hot; scatter_add: the table's rows
  bool keepdims = false;
  bool transpose_a = false;
  bool transpose_b = false;
  DType dtype = DType::F32;   // cast, input
  std::string name;           // input, variable, scalar; check_range: the op it guards
  std::string message;        // check_range: what must hold, e.g. "targets must lie in [0, 1]"
  float low = 0.0f, high = 0.0f;  // check_range bounds
  float value = 0.0f;         // scalar initial value, scalar constant
  float beta1 = 0.0f, beta2 = 0.0f, eps = 0.0f, weight_decay = 0.0f;  // adam_update; eps: the norms
  bool decoupled_weight_decay = false;  // adam_update: AdamW's p *= 1 - lr * weight_decay
  // conv2d and pooling: (height, width) pairs
  std::vector<int64_t> kernel_size, stride, padding, dilation;
  int64_t groups = 1;
  // attention: a causal mask, the scores' scale (0: 1/sqrt(D)), dropout on the weights, the
  // row log-sum-exps as an extra last column of the output (saved for the backward pass), and
  // the RNG stream of the forward node (its gradient ops redraw the same mask)
  bool causal = false, with_lse = false;
  float scale = 0.0f, dropout = 0.0f;
  int64_t stream = -1;
  // recurrence: the cell ("rnn_tanh", "rnn_relu", "lstm", "gru"); recurrence and
  // sequence_end: the time loop runs from the last step to the first
  std::string cell;
  bool reverse = false;
  bool lean = false;  // recurrence in inference: no gates saved for a backward pass
  bool sequence_only = false;  // lean recurrence: h alone, no LSTM cell states written out
  bool project_input = false;  // recurrence: takes (x, w_ih) and projects each step's x itself
  // quantized ops: the input's zero point (scale: quantize's and dequantize's), a relu in the
  // epilogue, and the output's scale and zero point when the output is int8 or uint8 (dtype)
  int64_t zero_point = 0, output_zero_point = 0;
  bool relu = false;
  float output_scale = 0.0f;
};

struct Node {
  OpKind op;
  std::vector<int> inputs;
  Attrs attrs;
  Shape shape;
  DType dtype = DType::F32;
  std::vector<uint8_t> data;  // constant payload: numel(shape) elements of dtype, bytes
};

std::string_view op_name(OpKind op);
OpKind op_from_name(std::string_view name);  // throws std::invalid_argument for unknown names
// The names of every primitive a graph can hold (leaves excluded), in OpKind order.
std::vector<std::string> op_names();
std::string shape_str(const Shape& s);
std::string_view dtype_name(DType d);
DType dtype_from_name(std::string_view name);  // "float32", "bfloat16", "int8", "bool", ...
int64_t dtype_size(DType d);                     // bytes per element
bool is_float(DType d);                          // float32, float16, bfloat16
int64_t numel(const Shape& s);  // concrete shapes only
Shape concretize(const Shape& s, int64_t batch);  // only the batch symbol
Shape concretize(const Shape& s, const SymbolBinding& binding);

int op_arity(OpKind op);          // -1 = variadic, 0 = leaf (the op registry holds the rest)
bool is_elementwise(OpKind op);      // unary, binary, select, broadcast_to, random_uniform
bool is_effect(OpKind op);  // writes variables instead of producing a value
// Validation ops: each runs before every effect of its function, so a failed check leaves
// variables untouched.
bool is_check(OpKind op);
// The variables an effect node writes (empty for other nodes).
std::vector<int> written_variables(const Node& n);

class Graph {
 public:
  int input(const std::string& name, const Shape& shape, DType dtype = DType::F32);
  int variable(const std::string& name, const Shape& shape, DType dtype = DType::F32);
  int scalar(const std::string& name, float initial);
  int constant(float value);
  int constant(const Shape& shape, std::vector<float> values);
  // numel(shape) elements of `dtype`, as bytes.
  int constant(const Shape& shape, DType dtype, std::vector<uint8_t> bytes);
  // Adds a primitive; runs shape inference and throws std::invalid_argument naming the op.
  int op(OpKind kind, std::vector<int> inputs, Attrs attrs = {});
  int op(std::string_view kind, std::vector<int> inputs, Attrs attrs = {});

  // Reverse-mode autodiff: appends the backward nodes, returns d(loss)/d(wrt[i]).
  std::vector<int> gradients(int loss, const std::vector<int>& wrt);

  const Node& node(int id) const;
  int size() const { return static_cast<int>(nodes_.size()); }
  const std::vector<Node>& nodes() const { return nodes_; }
  int find_named(OpKind kind, std::string_view name) const;  // -1 if absent

  // Builder sugar used by VJP rules and C++ programs.
  int add(int a, int b) { return op(OpKind::Add, {a, b}); }
  int sub(int a, int b) { return op(OpKind::Sub, {a, b}); }
  int mul(int a, int b) { return op(OpKind::Mul, {a, b}); }
  int div(int a, int b) { return op(OpKind::Div, {a, b}); }
  int neg(int a) { return op(OpKind::Neg, {a}); }
  int unary(OpKind k, int a) { return op(k, {a}); }
  int sum(int a, std::vector<int64_t> axes, bool keepdims = false);
  int mean(int a, std::vector<int64_t> axes, bool keepdims = false);
  int max(int a, std::vector<int64_t> axes, bool keepdims = false);
  int reshape(int a, Shape shape);
  int broadcast_to(int a, Shape shape);
  int matmul(int a, int b, bool transpose_a = false, bool transpose_b = false);
  int assign(int variable, int value) { return op(OpKind::Assign, {variable, value}); }
  // Sums `g` over broadcast dimensions so that it has `target` shape.
  int reduce_to(int g, const Shape& target);

  // For graph passes: every node reading `from` reads `to` instead (same shape and dtype).
  // `to` may be newer than its readers, so node ids stop being a topological order: run
  // passes after autodiff, on the graph an engine compiles.
  void redirect(int from, int to);

 private:
  int push(Node n);
  void check_unique(OpKind kind, const std::string& name) const;
  std::vector<Node> nodes_;
};

}  // namespace gometal
