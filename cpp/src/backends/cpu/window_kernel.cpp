// The kernel of the convolution and pooling ops and their gradients, which share one
// geometry: a whole-batch run and a per-sample run for sample tiling.
#include "backends/cpu/window_kernel.h"

#include <string_view>

#include "backends/cpu/conv.h"
#include "backends/cpu/pool.h"

namespace gometal {
namespace {

// Convolution and pooling: the op, its geometry, and up to two inputs.
struct WindowKernel final : Kernel {
  OpKind op;
  ConvGeometry geo;
  BufRef a, b, y;
  int64_t scratch = 0, shared = 0;
  int64_t scratch_floats() const override { return scratch; }
  int64_t shared_floats() const override { return shared; }
  void run(const ExecContext& ctx) const override {
    switch (op) {
      case OpKind::Conv2D: return conv2d_forward(ctx, geo, ctx.ptr(a), ctx.ptr(b), ctx.ptr(y));
      case OpKind::Conv2DInputGrad: return conv2d_input_grad(ctx, geo, ctx.ptr(a), ctx.ptr(b), ctx.ptr(y));
      case OpKind::Conv2DWeightGrad: return conv2d_weight_grad(ctx, geo, ctx.ptr(a), ctx.ptr(b), ctx.ptr(y));
      case OpKind::MaxPool2D: return max_pool2d(ctx, geo, ctx.ptr(a), ctx.ptr(y));
      case OpKind::MaxPool2DGrad: return max_pool2d_grad(ctx, geo, ctx.ptr(a), ctx.ptr(b), ctx.ptr(y));
      case OpKind::AvgPool2D: return avg_pool2d(ctx, geo, ctx.ptr(a), ctx.ptr(y));
      case OpKind::AvgPool2DGrad: return avg_pool2d_grad(ctx, geo, ctx.ptr(a), ctx.ptr(y));
      default: return;
    }
  }
  void run_samples(const ExecContext& ctx, int64_t n0, int64_t n1, int thread) const override {
    const float *pa = ctx.ptr(a), *pb = ctx.ptr(b);
    float* py = ctx.ptr(y);
    switch (op) {
      case OpKind::Conv2D: return conv2d_forward_samples(geo, pa, pb, py, n0, n1, ctx.thread_scratch(thread));
      case OpKind::Conv2DInputGrad:
        return conv2d_input_grad_samples(geo, pa, pb, py, n0, n1, ctx.thread_scratch(thread));
      case OpKind::MaxPool2D: return max_pool2d_planes(geo, pa, py, n0 * geo.c, n1 * geo.c);
      case OpKind::MaxPool2DGrad: return max_pool2d_grad_planes(geo, pa, pb, py, n0 * geo.c, n1 * geo.c);
      case OpKind::AvgPool2D: return avg_pool2d_planes(geo, pa, py, n0 * geo.c, n1 * geo.c);
      case OpKind::AvgPool2DGrad: return avg_pool2d_grad_planes(geo, pa, py, n0 * geo.c, n1 * geo.c);
      default: return Kernel::run_samples(ctx, n0, n1, thread);
    }
  }
};

}  // namespace

std::unique_ptr<Kernel> make_window_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                           const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  switch (n.op) {
    case OpKind::Conv2D: case OpKind::Conv2DInputGrad: case OpKind::Conv2DWeightGrad: case OpKind::MaxPool2D:
    case OpKind::MaxPool2DGrad: case OpKind::AvgPool2D: case OpKind::AvgPool2DGrad:
      break;
    default:
      return nullptr;
  }
  auto k = std::make_unique<WindowKernel>();
  k->op = n.op;
  k->y = mem.ref[id];
  k->a = mem.ref[n.inputs[0]];
  if (n.inputs.size() > 1) k->b = mem.ref[n.inputs[1]];
  const std::string_view name = op_name(n.op);
  switch (n.op) {
    case OpKind::Conv2D:
      k->geo = conv_geometry(name, shapes[n.inputs[0]], &shapes[n.inputs[1]], n.attrs);
      break;
    case OpKind::Conv2DInputGrad:
      k->geo = conv_geometry(name, shapes[id], &shapes[n.inputs[1]], n.attrs);
      break;
    case OpKind::Conv2DWeightGrad:
      k->geo = conv_geometry(name, shapes[n.inputs[0]], &shapes[id], n.attrs);
      break;
    case OpKind::MaxPool2D: case OpKind::MaxPool2DGrad:
      k->geo = conv_geometry(name, shapes[n.inputs[0]], nullptr, n.attrs);
      break;
    default:  // avg pooling forward reads x; its gradient produces x's shape
      k->geo = conv_geometry(name, n.op == OpKind::AvgPool2D ? shapes[n.inputs[0]] : shapes[id], nullptr, n.attrs);
  }
  if (n.op == OpKind::Conv2D || n.op == OpKind::Conv2DInputGrad || n.op == OpKind::Conv2DWeightGrad)
    k->scratch = conv2d_scratch(k->geo, n.op == OpKind::Conv2DWeightGrad);
  if (n.op == OpKind::Conv2DWeightGrad) k->shared = conv2d_weight_grad_shared(k->geo);
  return k;
}

}  // namespace gometal
