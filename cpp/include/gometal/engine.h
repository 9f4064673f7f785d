// The engine: owns a graph's persistent state (variables, runtime scalars, RNG) and runs
// its functions, compiling one plan per (function, batch size) on first use and keeping the
// most recently used kMaxPlansPerFunction of them.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gometal/ir.h"

namespace gometal {

class Backend;
class CompiledFunction;
struct FunctionSpec;

// Choices a backend is created with.
struct BackendOptions {
  // Ops the backend treats as if it had no kernel for them, so they run through their
  // registry decomposition (tests check a decomposition against the kernel this way).
  std::vector<OpKind> without_kernels;
  // CPU: threads of the engine's own pool; 0 shares the process-wide pool (set_num_threads).
  int threads = 0;
  // CPU: run chains of per-image steps image by image (-1: the process default,
  // set_sample_tiling).
  int sample_tiling = -1;
};

// A borrowed view of caller memory (C-contiguous).
struct TensorView {
  const void* data = nullptr;
  const int64_t* dims = nullptr;
  int rank = 0;
  DType dtype = DType::F32;
};

struct RunResult {
  std::vector<const void*> data;  // elements of dtypes[i]; valid until the engine's next run
  std::vector<Shape> shapes;
  std::vector<DType> dtypes;
  // Output i read as float32 (its dtype must be float32).
  const float* floats(size_t i) const { return static_cast<const float*>(data[i]); }
};

struct EngineStats {
  int64_t arena_bytes = 0;       // the working memory all cached plans share
  int64_t persistent_bytes = 0;  // variables, scalars, constants
  uint64_t allocations = 0;      // engine heap allocations so far (arenas, pools, scratch)
  uint64_t steps = 0;            // runs of functions with effects
  int64_t plans = 0;
};

// Plans cached per function, one per binding of the symbolic dims (batch size, sequence
// length, ...): past this many, the least recently used plan is dropped (and compiled again
// if its binding comes back).
inline constexpr int kMaxPlansPerFunction = 8;

class Engine {
 public:
  Engine(const Graph& graph, uint64_t seed = 0, const std::string& backend = "cpu",
         const BackendOptions& options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const Graph& graph() const { return graph_; }

  void define(const std::string& name, std::vector<int> inputs, std::vector<int> outputs,
              std::vector<int> effects, bool advance_rng);
  bool has_function(const std::string& name) const { return functions_.count(name) > 0; }
  const std::vector<int>& function_inputs(const std::string& name) const;

  // Validates the inputs (shapes, dtypes, finite values, label ranges), then runs one step.
  // Throws std::invalid_argument before touching any state when an input is bad.
  // Not thread-safe: to share an engine across threads, hold mutex() over run() and the
  // reading of its outputs.
  const RunResult& run(const std::string& name, const TensorView* inputs, int count);

  std::vector<std::string> variable_names() const;
  Shape variable_shape(const std::string& name) const;
  DType variable_dtype(const std::string& name) const;
  // `data` holds numel(shape) elements of `dtype`, which must be the variable's.
  void set_variable(const std::string& name, const void* data, const Shape& shape, DType dtype = DType::F32);
  void get_variable(const std::string& name, void* out) const;
  void set_scalar(const std::string& name, float value);
  float get_scalar(const std::string& name) const;

  uint64_t seed() const { return seed_; }
  uint64_t rng_step() const { return rng_step_; }
  void set_rng_step(uint64_t step) { rng_step_ = step; }

  EngineStats stats() const;
  // The backend's name, BLAS, threads and options, as (key, value) pairs.
  std::vector<std::pair<std::string, std::string>> backend_info() const;
  std::mutex& mutex() { return run_mutex_; }
  // The kernels the plan for (function, binding) runs, compiling it if needed; binding[0]
  // is the batch size, binding[k] the size of symbol -(k + 1).
  std::vector<std::string> describe(const std::string& name, const SymbolBinding& binding);

 private:
  struct Plan;
  struct Function;
  int named(OpKind kind, const std::string& name) const;
  Plan& plan_for(Function& fn, const SymbolBinding& binding);
  void lower_unsupported();
  void check_supported(const FunctionSpec& spec) const;

  Graph graph_;
  uint64_t seed_;
  uint64_t rng_step_ = 0;
  uint64_t steps_ = 0;
  std::unique_ptr<Backend> backend_;
  std::vector<int64_t> persistent_offset_;  // per node id
  int64_t persistent_bytes_ = 0;
  std::map<std::string, std::unique_ptr<Function>> functions_;
  std::map<int, int> replaced_;  // node -> its replacement by a graph pass or a decomposition
  std::map<int, std::vector<int>> expanded_effects_;  // effect -> the effects it decomposed into
  uint64_t pool_generation_ = 0;
  uint64_t use_clock_ = 0;  // counts plan lookups, for least-recently-used eviction
  std::mutex run_mutex_;  // see mutex(): plans share the backend's workspace, so one run at a time
};

void set_num_threads(int threads);
int get_num_threads();
// Sample tiling (on by default) runs chains of per-image steps image by image; it changes
// no result. Plans compiled afterwards follow the setting; for tests and benchmarks.
void set_sample_tiling(bool enabled);
bool sample_tiling();
std::string blas_info();
// U[0,1) from the engine's Philox generator, for initialisers: (seed, stream) pick the sequence.
std::vector<float> random_uniform(uint64_t seed, uint32_t stream, int64_t count);

}  // namespace gometal
