#include "gometal/engine.h"

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "backends/backend.h"
#include "ir/op_registry.h"
#include "backends/cpu/blas.h"
#include "passes/relu_pool_mask.h"
#include "passes/schedule.h"
#include "runtime/finite.h"
#include "runtime/memory.h"
#include "runtime/rng.h"
#include "runtime/thread_pool.h"

namespace gometal {

struct Engine::Plan {
  std::unique_ptr<CompiledFunction> compiled;
  RunResult result;
  uint64_t last_used = 0;  // the engine's use clock at the plan's latest run
};

struct Engine::Function {
  FunctionSpec spec;
  std::vector<std::pair<int, int64_t>> label_checks;  // (input slot, one_hot depth)
  std::map<SymbolBinding, std::unique_ptr<Plan>> plans;  // one per binding of the symbols
  SymbolBinding binding;           // the running call's, reused across calls
  std::vector<int> binding_owner;  // the input each symbol's size came from
  std::vector<const void*> input_ptrs;
};

namespace {

int64_t view_numel(const TensorView& v) {
  int64_t n = 1;
  for (int d = 0; d < v.rank; ++d) n *= v.dims[d];
  return n;
}

std::string dims_str(const int64_t* dims, int rank) {
  return shape_str(Shape(dims, dims + rank));
}

}  // namespace

Engine::Engine(const Graph& graph, uint64_t seed, const std::string& backend, const BackendOptions& options)
    : graph_(graph), seed_(seed) {
  // Graph passes run once, on the engine's own copy (after every gradient is built).
  for (auto [from, to] : narrow_relu_pool_masks(graph_)) replaced_[from] = to;
  if (backend == "cpu") backend_ = make_cpu_backend(options);
  else if (backend == "metal") backend_ = make_metal_backend(options);
  else throw std::invalid_argument("[engine] unknown backend '" + backend + "'; expected 'cpu' or 'metal'");
  blas_init_single_threaded();
  lower_unsupported();

  // Variables, scalars and constants each get a 64-byte aligned slot, by byte offset.
  persistent_offset_.assign(graph_.size(), -1);
  for (int i = 0; i < graph_.size(); ++i) {
    const Node& n = graph_.node(i);
    if (n.op != OpKind::Variable && n.op != OpKind::Scalar && n.op != OpKind::Constant) continue;
    persistent_offset_[i] = persistent_bytes_;
    persistent_bytes_ += (numel(n.shape) * dtype_size(n.dtype) + 63) / 64 * 64;
  }
  backend_->allocate_persistent(std::max<int64_t>(persistent_bytes_, 64));
  for (int i = 0; i < graph_.size(); ++i) {
    const Node& n = graph_.node(i);
    if (n.op == OpKind::Scalar) backend_->upload(persistent_offset_[i], &n.attrs.value, sizeof(float));
    if (n.op == OpKind::Constant)
      backend_->upload(persistent_offset_[i], n.data.data(), static_cast<int64_t>(n.data.size()));
  }
  pool_generation_ = pool_generation();
}

Engine::~Engine() = default;

int Engine::named(OpKind kind, const std::string& name) const {
  const int id = graph_.find_named(kind, name);
  if (id < 0)
    throw std::invalid_argument("[engine] no " + std::string(op_name(kind)) + " named '" + name + "'");
  return id;
}

void Engine::define(const std::string& name, std::vector<int> inputs, std::vector<int> outputs,
                    std::vector<int> effects, bool advance_rng) {
  // Outputs and effects a graph pass or a decomposition replaced are read from their
  // replacements.
  for (int& out : outputs)
    if (auto it = replaced_.find(out); it != replaced_.end()) out = it->second;
  std::vector<int> lowered_effects;
  for (int e : effects) {
    auto it = expanded_effects_.find(e);
    if (it == expanded_effects_.end()) lowered_effects.push_back(e);
    else lowered_effects.insert(lowered_effects.end(), it->second.begin(), it->second.end());
  }
  auto fn = std::make_unique<Function>();
  fn->spec = {name, std::move(inputs), std::move(outputs), std::move(lowered_effects), advance_rng};
  check_supported(fn->spec);
  for (int id : fn->spec.inputs)
    if (graph_.node(id).op != OpKind::Input)
      throw std::invalid_argument("[define] '" + name + "': node " + std::to_string(id) + " is not an input");
  for (int id : fn->spec.outputs) graph_.node(id);
  const Schedule s = schedule_function(graph_, fn->spec);  // validates effects and inputs now
  for (int id = 0; id < graph_.size(); ++id) {
    if (!s.needed[id] || graph_.node(id).op != OpKind::OneHot) continue;
    const int src = s.alias_root[graph_.node(id).inputs[0]];
    for (size_t slot = 0; slot < fn->spec.inputs.size(); ++slot)
      if (fn->spec.inputs[slot] == src) fn->label_checks.emplace_back(static_cast<int>(slot), graph_.node(id).attrs.depth);
  }
  fn->input_ptrs.resize(fn->spec.inputs.size());
  functions_[name] = std::move(fn);
}

// Nodes the backend has no kernel for run as their registry decomposition, rewritten once
// for the whole graph before the persistent pool is laid out (decompositions add constants).
void Engine::lower_unsupported() {
  const int original = graph_.size();
  for (int id = 0; id < original; ++id) {
    const Node& n = graph_.node(id);
    const OpDef& def = op_def(n.op);
    if (def.has(trait::kLeaf) || def.decompose == nullptr || backend_->supports(graph_, n)) continue;
    const std::vector<int> replacement = def.decompose(graph_, id);
    if (def.has(trait::kEffect)) {
      expanded_effects_[id] = replacement;
    } else {
      graph_.redirect(id, replacement.front());
      replaced_[id] = replacement.front();
    }
  }
}

// A function whose nodes the backend cannot run, and that have no decomposition, is refused
// when it is defined, not when it first runs.
void Engine::check_supported(const FunctionSpec& spec) const {
  const Schedule s = schedule_function(graph_, spec);
  for (int id : s.order) {
    const Node& n = graph_.node(id);
    if (backend_->supports(graph_, n)) continue;
    std::string dtypes;
    for (int in : n.inputs) dtypes += std::string(dtypes.empty() ? "" : ", ") + std::string(dtype_name(graph_.node(in).dtype));
    throw std::invalid_argument("[define] '" + spec.name + "': the " + backend_->name() + " backend has no kernel for '" +
                                std::string(op_name(n.op)) + "' with inputs (" + dtypes +
                                ") and the op has no decomposition");
  }
}

const std::vector<int>& Engine::function_inputs(const std::string& name) const {
  auto it = functions_.find(name);
  if (it == functions_.end()) throw std::invalid_argument("[run] no function named '" + name + "'");
  return it->second->spec.inputs;
}

Engine::Plan& Engine::plan_for(Function& fn, const SymbolBinding& binding) {
  if (pool_generation_ != pool_generation()) {
    // The thread count changed: plans sized their scratch for the old pool.
    for (auto& [_, f] : functions_) f->plans.clear();
    pool_generation_ = pool_generation();
  }
  ++use_clock_;
  auto it = fn.plans.find(binding);
  if (it != fn.plans.end()) {
    it->second->last_used = use_clock_;
    return *it->second;
  }
  if (static_cast<int>(fn.plans.size()) >= kMaxPlansPerFunction) {
    // Least recently used out: a server that sees every batch size (or sequence length)
    // keeps a bounded cache.
    auto oldest = fn.plans.begin();
    for (auto p = fn.plans.begin(); p != fn.plans.end(); ++p)
      if (p->second->last_used < oldest->second->last_used) oldest = p;
    fn.plans.erase(oldest);
  }
  auto plan = std::make_unique<Plan>();
  plan->last_used = use_clock_;
  plan->compiled = backend_->compile(graph_, fn.spec, binding, persistent_offset_);
  for (int out : fn.spec.outputs) {
    plan->result.shapes.push_back(concretize(graph_.node(out).shape, binding));
    plan->result.dtypes.push_back(graph_.node(out).dtype);
  }
  plan->result.data.resize(fn.spec.outputs.size());
  return *fn.plans.emplace(binding, std::move(plan)).first->second;
}

const RunResult& Engine::run(const std::string& name, const TensorView* inputs, int count) {
  auto it = functions_.find(name);
  if (it == functions_.end()) {
    std::string known;
    for (auto& [k, _] : functions_) known += (known.empty() ? "" : ", ") + k;
    throw std::invalid_argument("[run] no function named '" + name + "'; defined: " + known);
  }
  Function& fn = *it->second;
  const auto& spec = fn.spec;
  if (count != static_cast<int>(spec.inputs.size()))
    throw std::invalid_argument("[run] '" + name + "' takes " + std::to_string(spec.inputs.size()) +
                                " inputs, got " + std::to_string(count));

  // Each symbolic dim takes its size from the inputs; every input must agree on it. The
  // vectors are the function's own, reused: a steady-state run allocates nothing.
  SymbolBinding& binding = fn.binding;
  std::vector<int>& owners = fn.binding_owner;
  binding.clear();
  owners.clear();
  for (int i = 0; i < count; ++i) {
    const Node& decl = graph_.node(spec.inputs[i]);
    const TensorView& v = inputs[i];
    const std::string& iname = decl.attrs.name;
    if (v.dtype != decl.dtype)
      throw std::invalid_argument("[run] input '" + iname + "' expects dtype " +
                                  std::string(dtype_name(decl.dtype)) + ", got " + std::string(dtype_name(v.dtype)));
    bool ok = v.rank == static_cast<int>(decl.shape.size());
    for (int d = 0; ok && d < v.rank; ++d)
      ok = is_symbol(decl.shape[d]) ? v.dims[d] >= 0 : v.dims[d] == decl.shape[d];
    if (!ok)
      throw std::invalid_argument("[run] input '" + iname + "' expects shape " + shape_str(decl.shape) +
                                  ", got " + dims_str(v.dims, v.rank));
    for (int d = 0; d < v.rank; ++d) {
      if (!is_symbol(decl.shape[d])) continue;
      const auto index = static_cast<size_t>(-decl.shape[d] - 1);
      if (binding.size() <= index) {
        binding.resize(index + 1, -1);
        owners.resize(index + 1);
      }
      if (binding[index] < 0) {
        binding[index] = v.dims[d];
        owners[index] = i;
      } else if (v.dims[d] != binding[index]) {
        const std::string what = index == 0 ? std::string("batch sizes")
                                            : "sizes for '" + symbol_name(decl.shape[d]) + "'";
        const std::string& owner = graph_.node(spec.inputs[owners[index]]).attrs.name;
        throw std::invalid_argument("[run] inputs '" + owner + "' and '" + iname + "' have different " +
                                    what + ": " + std::to_string(binding[index]) + " vs " +
                                    std::to_string(v.dims[d]));
      }
    }
    if (v.data == nullptr && view_numel(v) > 0)
      throw std::invalid_argument("[run] input '" + iname + "' has no data");
  }
  if (!binding.empty() && binding[0] == 0)
    throw std::invalid_argument("[run] '" + name + "' got an empty batch (batch size 0)");
  for (size_t index = 1; index < binding.size(); ++index)
    if (binding[index] == 0)
      throw std::invalid_argument("[run] '" + name + "' got size 0 for '" + symbol_name(-static_cast<int64_t>(index) - 1) +
                                  "' (input '" + graph_.node(spec.inputs[owners[index]]).attrs.name + "')");
  for (int64_t& size : binding)
    if (size < 0) size = 1;  // a symbol no input carries (a function without inputs)
  if (binding.empty()) binding.push_back(1);
  for (int i = 0; i < count; ++i) {
    const TensorView& v = inputs[i];
    if (is_float(v.dtype) && !all_finite(v.data, view_numel(v), v.dtype))
      throw std::invalid_argument("[run] input '" + graph_.node(spec.inputs[i]).attrs.name +
                                  "' contains NaN or infinite values");
  }
  for (auto [slot, depth] : fn.label_checks) {
    const TensorView& v = inputs[slot];
    const int64_t n = view_numel(v);
    const auto* labels = static_cast<const int32_t*>(v.data);
    for (int64_t j = 0; j < n; ++j)
      if (labels[j] < 0 || labels[j] >= depth)
        throw std::invalid_argument("[run] input '" + graph_.node(spec.inputs[slot]).attrs.name + "' holds label " +
                                    std::to_string(labels[j]) + " at index " + std::to_string(j) +
                                    ", outside the valid range [0, " + std::to_string(depth) + ")");
  }

  Plan& plan = plan_for(fn, binding);
  for (int i = 0; i < count; ++i) fn.input_ptrs[i] = inputs[i].data;
  RunArgs args;
  args.inputs = fn.input_ptrs.data();
  args.seed = seed_;
  args.rng_step = rng_step_;
  plan.compiled->execute(args);
  backend_->synchronize();
  if (spec.advance_rng) ++rng_step_;
  if (!spec.effects.empty()) ++steps_;
  for (size_t i = 0; i < spec.outputs.size(); ++i) plan.result.data[i] = plan.compiled->output(static_cast<int>(i), args);
  return plan.result;
}

std::vector<std::string> Engine::describe(const std::string& name, const SymbolBinding& binding) {
  auto it = functions_.find(name);
  if (it == functions_.end()) throw std::invalid_argument("[describe] no function named '" + name + "'");
  if (binding.empty()) throw std::invalid_argument("[describe] needs the batch size");
  for (size_t index = 0; index < binding.size(); ++index)
    if (binding[index] < 1)
      throw std::invalid_argument("[describe] the size of '" + symbol_name(-static_cast<int64_t>(index) - 1) +
                                  "' must be >= 1, got " + std::to_string(binding[index]));
  return plan_for(*it->second, binding).compiled->describe();
}

std::vector<std::string> Engine::variable_names() const {
  std::vector<std::string> names;
  for (const Node& n : graph_.nodes())
    if (n.op == OpKind::Variable) names.push_back(n.attrs.name);
  return names;
}

Shape Engine::variable_shape(const std::string& name) const { return graph_.node(named(OpKind::Variable, name)).shape; }

DType Engine::variable_dtype(const std::string& name) const { return graph_.node(named(OpKind::Variable, name)).dtype; }

void Engine::set_variable(const std::string& name, const void* data, const Shape& shape, DType dtype) {
  const int id = named(OpKind::Variable, name);
  const Node& var = graph_.node(id);
  if (shape != var.shape)
    throw std::invalid_argument("[set_variable] '" + name + "' has shape " + shape_str(var.shape) + ", got " +
                                shape_str(shape));
  if (dtype != var.dtype)
    throw std::invalid_argument("[set_variable] '" + name + "' holds " + std::string(dtype_name(var.dtype)) +
                                ", got " + std::string(dtype_name(dtype)));
  backend_->upload(persistent_offset_[id], data, numel(shape) * dtype_size(dtype));
}

void Engine::get_variable(const std::string& name, void* out) const {
  const int id = named(OpKind::Variable, name);
  const Node& var = graph_.node(id);
  backend_->download(persistent_offset_[id], out, numel(var.shape) * dtype_size(var.dtype));
}

void Engine::set_scalar(const std::string& name, float value) {
  if (!std::isfinite(value))
    throw std::invalid_argument("[set_scalar] '" + name + "' must be finite, got " + std::to_string(value));
  backend_->upload(persistent_offset_[named(OpKind::Scalar, name)], &value, sizeof value);
}

float Engine::get_scalar(const std::string& name) const {
  float value;
  backend_->download(persistent_offset_[named(OpKind::Scalar, name)], &value, sizeof value);
  return value;
}

EngineStats Engine::stats() const {
  EngineStats st;
  st.persistent_bytes = backend_->persistent_bytes();
  st.arena_bytes = backend_->workspace_bytes();
  for (auto& [_, fn] : functions_) st.plans += static_cast<int64_t>(fn->plans.size());
  st.allocations = engine_allocation_count();
  st.steps = steps_;
  return st;
}

std::vector<std::pair<std::string, std::string>> Engine::backend_info() const { return backend_->info(); }

std::vector<float> random_uniform(uint64_t seed, uint32_t stream, int64_t count) {
  if (count < 0) throw std::invalid_argument("[random_uniform] count must be >= 0");
  std::vector<float> out(static_cast<size_t>(count));
  // Step 2^63 keeps initialiser draws apart from every training step's draws.
  philox_uniform(seed, stream, uint64_t{1} << 63, 0, count, out.data());
  return out;
}

}  // namespace gometal
