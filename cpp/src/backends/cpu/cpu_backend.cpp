// The CPU backend: schedule, fuse, plan memory, then lower each step to a kernel.
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <stdexcept>
#include <string_view>

#include "backends/backend.h"
#include "backends/cpu/attention.h"
#include "backends/cpu/blas.h"
#include "backends/cpu/cast.h"
#include "backends/cpu/checks.h"
#include "backends/cpu/collective.h"
#include "backends/cpu/support.h"
#include "backends/cpu/window_kernel.h"
#include "backends/cpu/fused_elementwise.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/gemm_packed_weights.h"
#include "backends/cpu/conv.h"
#include "backends/cpu/decoding.h"
#include "backends/cpu/layout.h"
#include "backends/cpu/pool.h"
#include "backends/cpu/positions.h"
#include "backends/cpu/quantized.h"
#include "backends/cpu/quantized_chains.h"
#include "backends/cpu/recurrent.h"
#include "backends/cpu/optimizer_updates.h"
#include "backends/cpu/reduce.h"
#include "backends/cpu/sequence_kernels.h"
#include "backends/cpu/passes/conv_epilogues.h"
#include "backends/cpu/passes/dense_epilogues.h"
#include "backends/cpu/passes/fusion.h"
#include "backends/cpu/passes/memory_plan.h"
#include "backends/cpu/passes/sample_tiling.h"
#include "backends/cpu/passes/summed_products.h"
#include "runtime/memory.h"

namespace gometal {
namespace {

struct MatMulKernel final : Kernel {
  BufRef a, b, c;
  bool ta, tb;
  int64_t m, n, k;
  void run(const ExecContext& ctx) const override {
    gemm(*ctx.pool, ta, tb, m, n, k, ctx.ptr(a), ctx.ptr(b), ctx.ptr(c));
  }
};

struct ReduceKernel final : Kernel {
  BufRef x, y;
  ReduceKind kind;
  ReduceGeometry geo;
  void run(const ExecContext& ctx) const override { reduce(*ctx.pool, kind, geo, ctx.ptr(x), ctx.ptr(y)); }
  void run_samples(const ExecContext& ctx, int64_t n0, int64_t n1, int) const override {
    reduce_samples(kind, geo, ctx.ptr(x), ctx.ptr(y), n0, n1);
  }
};

struct ChannelMomentsKernel final : Kernel {
  BufRef x, y;
  int64_t lead, channels, trail;
  void run(const ExecContext& ctx) const override {
    channel_moments(*ctx.pool, lead, channels, trail, ctx.ptr(x), ctx.ptr(y));
  }
};

struct TransposeKernel final : Kernel {
  BufRef x, y;
  Shape in;
  std::vector<int64_t> perm;
  void run(const ExecContext& ctx) const override { transpose(*ctx.pool, in, perm, ctx.ptr(x), ctx.ptr(y)); }
};

// Slice, pad and concat: copies of windows along one axis.
struct AxisCopyKernel final : Kernel {
  struct Piece {
    BufRef src;
    int64_t src_len, src_start, dst_start, count;
  };
  BufRef y;
  int64_t outer, inner, dst_len;
  bool zero_first;
  std::vector<Piece> pieces;
  void run(const ExecContext& ctx) const override {
    float* out = ctx.ptr(y);
    if (zero_first) std::fill(out, out + outer * dst_len * inner, 0.0f);
    for (const Piece& p : pieces)
      copy_along_axis(outer, inner, ctx.ptr(p.src), p.src_len, p.src_start, out, dst_len, p.dst_start, p.count);
  }
};

struct OneHotKernel final : Kernel {
  BufRef x, y;
  int64_t n, depth;
  void run(const ExecContext& ctx) const override { one_hot(ctx.iptr(x), n, depth, ctx.ptr(y)); }
};

// Runs on the calling thread, outside any parallel region, so its exception leaves the
// step cleanly; the schedule puts it before every effect.
struct CheckRangeKernel final : Kernel {
  BufRef x, y;
  Shape shape;
  float low, high;
  std::string label, message;
  void run(const ExecContext& ctx) const override {
    check_range(ctx.ptr(x), shape, low, high, label, message);
    *ctx.ptr(y) = 0.0f;
  }
};

struct CastKernel final : Kernel {
  BufRef x, y;
  int64_t n;
  DType from, to;
  void run(const ExecContext& ctx) const override { cast(from, ctx.bytes(x), n, to, ctx.bytes(y)); }
};

struct CopyKernel final : Kernel {
  BufRef x, y;
  int64_t n;
  void run(const ExecContext& ctx) const override {
    const float* src = ctx.ptr(x);
    float* dst = ctx.ptr(y);
    if (src != dst) std::copy(src, src + n, dst);
  }
};

// A sample-tiled run: each thread takes a share of the batch and pushes every image
// through all the run's steps before the next image.
struct SampleTiledKernel final : Kernel {
  std::vector<std::unique_ptr<Kernel>> steps;
  int64_t samples = 0;
  int64_t scratch_floats() const override { return most(&Kernel::scratch_floats); }
  int64_t shared_floats() const override { return most(&Kernel::shared_floats); }
  void run(const ExecContext& ctx) const override {
    // One task per image, claimed as threads come free: a thread slowed by other work on
    // the machine takes fewer images instead of holding the others at the end of the run.
    ctx.pool->parallel_for(static_cast<int>(samples), [&](int n, int thread) {
      ExecContext local = ctx;
      local.tile = ctx.tiles + thread * ctx.tile_stride;
      local.tile_sample = n;
      for (const auto& k : steps) k->run_samples(local, n, n + 1, thread);
    });
  }

 private:
  // The largest of the steps' needs: the steps run one at a time.
  int64_t most(int64_t (Kernel::*need)() const) const {
    int64_t largest = 0;
    for (const auto& k : steps) largest = std::max(largest, (k.get()->*need)());
    return largest;
  }
};

void outer_inner(const Shape& s, int64_t axis, int64_t* outer, int64_t* inner) {
  *outer = 1;
  *inner = 1;
  for (int64_t d = 0; d < static_cast<int64_t>(s.size()); ++d) {
    if (d < axis) *outer *= s[d];
    if (d > axis) *inner *= s[d];
  }
}

std::unique_ptr<Kernel> make_single(const Graph& g, int id, const MemoryPlan& mem, const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  const BufRef y = mem.ref[id];
  auto in = [&](size_t i) { return mem.ref[n.inputs[i]]; };
  auto in_shape = [&](size_t i) -> const Shape& { return shapes[n.inputs[i]]; };
  if (auto k = make_packed_matmul_kernel(g, id, mem, shapes)) return k;
  if (auto k = make_sequence_kernel(g, id, mem, shapes)) return k;
  if (auto k = make_decoding_kernel(g, id, mem, shapes)) return k;
  if (auto k = make_recurrent_kernel(g, id, mem, shapes)) return k;
  if (auto k = make_positions_kernel(g, id, mem, shapes)) return k;
  if (auto k = make_quantized_kernel(g, id, mem, shapes)) return k;
  if (auto k = make_collective_kernel(g, id, mem, shapes)) return k;
  if (auto k = make_conv_epilogue_kernel(g, id, mem, shapes)) return k;
  if (auto k = make_window_kernel(g, id, mem, shapes)) return k;
  switch (n.op) {
    case OpKind::MatMul: {
      auto k = std::make_unique<MatMulKernel>();
      k->a = in(0);
      k->b = in(1);
      k->c = y;
      k->ta = n.attrs.transpose_a;
      k->tb = n.attrs.transpose_b;
      k->m = shapes[id][0];
      k->n = shapes[id][1];
      k->k = n.attrs.transpose_a ? in_shape(0)[0] : in_shape(0)[1];
      return k;
    }
    case OpKind::Sum: case OpKind::Mean: case OpKind::Max: case OpKind::Argmax: {
      auto k = std::make_unique<ReduceKernel>();
      k->x = in(0);
      k->y = y;
      k->kind = n.op == OpKind::Sum ? ReduceKind::Sum
                : n.op == OpKind::Mean ? ReduceKind::Mean
                : n.op == OpKind::Max ? ReduceKind::Max : ReduceKind::Argmax;
      const std::vector<int64_t> axes = n.op == OpKind::Argmax ? std::vector<int64_t>{n.attrs.axis} : n.attrs.ints;
      k->geo = reduce_geometry(in_shape(0), axes);
      return k;
    }
    case OpKind::ChannelMoments: {
      auto k = std::make_unique<ChannelMomentsKernel>();
      k->x = in(0);
      k->y = y;
      const Shape& s = in_shape(0);
      k->lead = s[0];
      k->channels = s[1];
      k->trail = 1;
      for (size_t d = 2; d < s.size(); ++d) k->trail *= s[d];
      return k;
    }
    case OpKind::Transpose: {
      auto k = std::make_unique<TransposeKernel>();
      k->x = in(0);
      k->y = y;
      k->in = in_shape(0);
      k->perm = n.attrs.ints;
      return k;
    }
    case OpKind::Slice: case OpKind::Pad: case OpKind::Concat: {
      auto k = std::make_unique<AxisCopyKernel>();
      k->y = y;
      outer_inner(shapes[id], n.attrs.axis, &k->outer, &k->inner);
      k->dst_len = shapes[id][n.attrs.axis];
      k->zero_first = n.op == OpKind::Pad;
      if (n.op == OpKind::Slice) {
        k->pieces.push_back({in(0), in_shape(0)[n.attrs.axis], n.attrs.start, 0, n.attrs.end - n.attrs.start});
      } else if (n.op == OpKind::Pad) {
        const int64_t len = in_shape(0)[n.attrs.axis];
        k->pieces.push_back({in(0), len, 0, n.attrs.start, len});
      } else {
        int64_t offset = 0;
        for (size_t i = 0; i < n.inputs.size(); ++i) {
          const int64_t len = in_shape(i)[n.attrs.axis];
          k->pieces.push_back({in(i), len, 0, offset, len});
          offset += len;
        }
      }
      return k;
    }
    case OpKind::OneHot: {
      auto k = std::make_unique<OneHotKernel>();
      k->x = in(0);
      k->y = y;
      k->n = numel(in_shape(0));
      k->depth = n.attrs.depth;
      return k;
    }
    case OpKind::CheckRange: {
      auto k = std::make_unique<CheckRangeKernel>();
      k->x = in(0);
      k->y = y;
      k->shape = in_shape(0);
      k->low = n.attrs.low;
      k->high = n.attrs.high;
      k->label = n.attrs.name;
      k->message = n.attrs.message;
      return k;
    }
    case OpKind::Cast: {
      auto k = std::make_unique<CastKernel>();
      k->x = in(0);
      k->y = y;
      k->n = numel(in_shape(0));
      k->from = g.node(n.inputs[0]).dtype;
      k->to = n.attrs.dtype;
      return k;
    }
    case OpKind::AdamUpdate:
      return make_adam_kernel(g, id, mem, shapes);
    case OpKind::Attention: case OpKind::AttentionLse: case OpKind::AttentionGradQ: case OpKind::AttentionGradKV:
    case OpKind::AttentionGrad:
      return make_attention_kernel(g, id, mem, shapes);
    case OpKind::Assign: {
      auto k = std::make_unique<CopyKernel>();
      k->x = in(1);
      k->y = in(0);
      k->n = numel(in_shape(1));
      return k;
    }
    default:
      break;
  }
  throw std::logic_error("[cpu] no kernel for op '" + std::string(op_name(n.op)) + "'");
}

// The memory one engine's plans run in. At most one of them runs at a time (the engine's
// lock), so they share one arena, scratch, workspace and tile area, each as large as the
// largest plan needs: a new batch size adds a plan, not another arena.
struct CpuWorkspace {
  AlignedBuffer arena, scratch, shared, tiles;
  AlignedBuffer persistent;  // variables, scalars and constants, laid out by the engine

  static void grow(AlignedBuffer& buffer, int64_t bytes) {
    if (buffer.bytes() < static_cast<size_t>(bytes)) buffer = AlignedBuffer(static_cast<size_t>(bytes));
  }
  int64_t bytes() const {
    return static_cast<int64_t>(arena.bytes() + scratch.bytes() + shared.bytes() + tiles.bytes());
  }
};

class CpuFunction final : public CompiledFunction {
 public:
  CpuFunction(const Graph& g, const FunctionSpec& fn, const SymbolBinding& binding,
              const std::vector<int64_t>& persistent_offset,
              std::shared_ptr<CpuWorkspace> workspace, std::shared_ptr<ThreadPool> pool, bool tiling_on)
      : workspace_(std::move(workspace)), pool_(std::move(pool)) {
    const Schedule s = schedule_function(g, fn);
    std::vector<Shape> shapes(g.size());
    for (int i = 0; i < g.size(); ++i)
      if (s.needed[i]) shapes[i] = concretize(g.node(i).shape, binding);
    const int64_t batch = binding.empty() ? 1 : binding[0];  // sample tiling cuts the batch
    Fusion f = fuse_elementwise(g, s, fn, shapes);
    fuse_conv_epilogues(g, s, fn, shapes, f);
    fuse_dense_epilogues(g, s, fn, shapes, f);
    fuse_quantized_chains(g, s, fn, shapes, f);
    const std::vector<int> summed_product = find_summed_products(g, s, fn, shapes);
    read_slices_in_place(g, s, fn, shapes, summed_product, f);
    const SampleTiling tiling = plan_sample_tiling(g, s, f, shapes, batch, tiling_on);
    const MemoryPlan mem = plan_memory(g, s, f, fn, shapes, persistent_offset, &tiling);
    const SavedLse saved_lse = plan_saved_lse(g, f.step_of, shapes);
    int64_t scratch = 0, shared = 0;
    std::unique_ptr<SampleTiledKernel> run;
    std::string run_line;
    for (size_t st = 0; st < f.steps.size(); ++st) {
      const Step& step = f.steps[st];
      std::string line = step.fused ? "fused[" : "";
      for (size_t i = 0; i < step.nodes.size(); ++i) {
        if (i) line += ',';
        line += op_name(g.node(step.nodes[i]).op);
      }
      line += (step.fused ? "] " : " ") + shape_str(shapes[step.nodes.back()]);
      const int first = step.nodes.front();
      std::unique_ptr<Kernel> kernel;
      if (step.fused) {
        kernel = make_fused_elementwise(g, step, f, mem, shapes);
      } else if ((kernel = make_saved_norm_stats_kernel(g, first, f, mem, shapes, &line))) {
      } else if ((kernel = make_summed_product_kernel(g, first, summed_product, mem, shapes))) {
        line += " (batch summed in one product)";
      } else if ((kernel = make_saved_lse_kernel(g, first, saved_lse, mem, shapes))) {
        line += " (log-sum-exps kept)";
      } else {
        kernel = make_single(g, first, mem, shapes);
      }
      scratch = std::max(scratch, kernel->scratch_floats());
      shared = std::max(shared, kernel->shared_floats());
      if (tiling.run_begin[st] == tiling.run_end[st]) {
        description_.push_back(line);
        kernels_.push_back(std::move(kernel));
        continue;
      }
      if (tiling.run_begin[st] == static_cast<int>(st)) {
        run = std::make_unique<SampleTiledKernel>();
        run->samples = batch;
        run_line = "tiled{ ";
      }
      run->steps.push_back(std::move(kernel));
      run_line += line + (tiling.run_end[st] == static_cast<int>(st) ? " }" : " ; ");
      if (tiling.run_end[st] == static_cast<int>(st)) {
        description_.push_back(run_line);
        kernels_.push_back(std::move(run));
      }
    }
    for (int out : fn.outputs) outputs_.push_back(mem.ref[out]);
    writes_ = persistent_writes(g, fn, persistent_offset);
    // GOMETAL_PROFILE=1 times every kernel and prints the table when the plan is dropped;
    // =cpu times the calling thread's CPU time instead of the wall clock, so that a loaded
    // machine's waits do not count (the whole kernel's work at 1 thread; its own part at more).
    const char* profile = std::getenv("GOMETAL_PROFILE");
    profile_cpu_ = profile && std::string_view(profile) == "cpu";
    profile_ = profile_cpu_ || (profile && profile[0] == '1');
    seconds_.assign(kernels_.size(), 0.0);
    scratch_stride_ = (scratch + 15) / 16 * 16;
    tile_stride_ = (mem.tile_bytes + 63) / 64 * 64;
    const int64_t threads = pool_->size();
    const int64_t float_bytes = static_cast<int64_t>(sizeof(float));
    needs_ = {mem.arena_bytes, scratch_stride_ * threads * float_bytes, shared * float_bytes, tile_stride_ * threads};
    CpuWorkspace::grow(workspace_->arena, needs_[0]);
    CpuWorkspace::grow(workspace_->scratch, needs_[1]);
    CpuWorkspace::grow(workspace_->shared, needs_[2]);
    CpuWorkspace::grow(workspace_->tiles, needs_[3]);
  }

  double profile_seconds() const {
    if (!profile_cpu_) {
      const auto since_epoch = std::chrono::steady_clock::now().time_since_epoch();
      return std::chrono::duration<double>(since_epoch).count();
    }
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
  }

  void execute(const RunArgs& args) override {
    ExecContext ctx;
    ctx.arena = workspace_->arena.raw();
    ctx.persistent = workspace_->persistent.raw();
    ctx.inputs = args.inputs;
    ctx.pool = pool_.get();
    ctx.scratch = workspace_->scratch.data();
    ctx.scratch_stride = scratch_stride_;
    ctx.shared = workspace_->shared.data();
    ctx.seed = args.seed;
    ctx.rng_step = args.rng_step;
    ctx.tiles = workspace_->tiles.raw();
    ctx.tile_stride = tile_stride_;
    writes_.note(ctx.persistent);
    if (!profile_) {
      for (const auto& k : kernels_) k->run(ctx), progress_collectives();  // buckets in flight move on
      return;
    }
    for (size_t i = 0; i < kernels_.size(); ++i) {
      const double t0 = profile_seconds();
      kernels_[i]->run(ctx), progress_collectives();
      seconds_[i] += profile_seconds() - t0;
    }
    ++runs_;
  }

  ~CpuFunction() override {
    if (!profile_ || runs_ == 0) return;
    double total = 0;
    for (double t : seconds_) total += t;
    std::fprintf(stderr, "gometal profile: %lld runs, %.3f ms per run%s\n", static_cast<long long>(runs_),
                 1e3 * total / runs_, profile_cpu_ ? " (calling thread's CPU time)" : "");
    for (size_t i = 0; i < kernels_.size(); ++i)
      std::fprintf(stderr, "  %6.1f%% %8.1f us  %s\n", 100 * seconds_[i] / total, 1e6 * seconds_[i] / runs_,
                   description_[i].c_str());
  }

  const void* output(int i, const RunArgs& args) const override {
    ExecContext ctx;
    ctx.arena = workspace_->arena.raw();
    ctx.persistent = workspace_->persistent.raw();
    ctx.inputs = args.inputs;
    return ctx.bytes(outputs_[i]);
  }

  int64_t arena_bytes() const override {
    int64_t bytes = 0;
    for (int64_t n : needs_) bytes += n;
    return bytes;
  }
  const std::vector<std::string>& describe() const override { return description_; }

 private:
  std::vector<std::unique_ptr<Kernel>> kernels_;
  std::vector<BufRef> outputs_;
  PersistentWrites writes_;  // the variables this plan's effects write: packed copies refresh
  std::vector<std::string> description_;
  std::shared_ptr<CpuWorkspace> workspace_;
  // The pool stays alive as long as this plan, whatever set_num_threads does meanwhile.
  std::shared_ptr<ThreadPool> pool_;
  std::array<int64_t, 4> needs_{};  // bytes of arena, scratch, shared workspace, tiles
  int64_t scratch_stride_ = 0, tile_stride_ = 0;
  bool profile_ = false, profile_cpu_ = false;
  std::vector<double> seconds_;
  int64_t runs_ = 0;
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(BackendOptions options) : options_(std::move(options)) {
    if (options_.threads < 0)
      throw std::invalid_argument("[cpu] threads must be >= 0 (0: the process-wide pool), got " +
                                  std::to_string(options_.threads));
    if (options_.threads > 0) own_pool_ = std::make_shared<ThreadPool>(options_.threads);
  }
  std::string name() const override { return "cpu"; }
  bool supports(const Graph& g, const Node& n) const override {
    for (OpKind op : options_.without_kernels)
      if (op == n.op) return false;
    return cpu_runs(g, n);
  }
  std::unique_ptr<CompiledFunction> compile(const Graph& g, const FunctionSpec& fn, const SymbolBinding& binding,
                                            const std::vector<int64_t>& persistent_offset) override {
    return std::make_unique<CpuFunction>(g, fn, binding, persistent_offset, workspace_, pool(), tiling());
  }
  int64_t workspace_bytes() const override { return workspace_->bytes(); }

  void allocate_persistent(int64_t bytes) override {
    workspace_->persistent = AlignedBuffer(static_cast<size_t>(bytes));
  }
  int64_t persistent_bytes() const override { return static_cast<int64_t>(workspace_->persistent.bytes()); }
  void upload(int64_t offset, const void* src, int64_t bytes) override {
    std::memcpy(workspace_->persistent.raw() + offset, src, static_cast<size_t>(bytes));
    note_persistent_write(workspace_->persistent.raw() + offset, bytes);
  }
  void download(int64_t offset, void* dst, int64_t bytes) const override {
    std::memcpy(dst, workspace_->persistent.raw() + offset, static_cast<size_t>(bytes));
  }
  void synchronize() override {}  // kernels run on the calling thread's schedule

  std::vector<std::pair<std::string, std::string>> info() const override {
    return {{"backend", "cpu"},
            {"blas", blas_info()},
            {"threads", std::to_string(pool()->size()) + (own_pool_ ? " (its own pool)" : " (the process pool)")},
            {"sample_tiling", tiling() ? "on" : "off"}};
  }

 private:
  std::shared_ptr<ThreadPool> pool() const { return own_pool_ ? own_pool_ : cpu_pool(); }
  bool tiling() const { return options_.sample_tiling < 0 ? sample_tiling() : options_.sample_tiling != 0; }

  BackendOptions options_;
  std::shared_ptr<ThreadPool> own_pool_;
  std::shared_ptr<CpuWorkspace> workspace_ = std::make_shared<CpuWorkspace>();
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& options) {
  return std::make_unique<CpuBackend>(options);
}

}  // namespace gometal
