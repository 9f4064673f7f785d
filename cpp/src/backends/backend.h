// The backend interface: a backend owns the engine's memory (the persistent pool of variables,
// scalars and constants, and the workspace plans run in) and turns one function of the graph,
// at one batch size, into something that runs, possibly asynchronously. The CPU backend is the
// reference; Metal plugs in here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gometal/engine.h"
#include "gometal/ir.h"
#include "passes/schedule.h"

namespace gometal {

struct RunArgs {
  const void* const* inputs = nullptr;  // one pointer per function input
  uint64_t seed = 0;
  uint64_t rng_step = 0;
};

class CompiledFunction {
 public:
  virtual ~CompiledFunction() = default;
  // Queues the plan's work; Backend::synchronize waits for it (the CPU runs it at once).
  virtual void execute(const RunArgs& args) = 0;
  // Where output i lies, readable by the host after synchronize (inside the workspace, the
  // persistent pool or an input): valid until the backend runs or compiles anything else.
  virtual const void* output(int i, const RunArgs& args) const = 0;
  // The working memory this plan needs (its share of the backend's workspace).
  virtual int64_t arena_bytes() const = 0;
  // One line per kernel, e.g. "fused[add,relu] (128, 512)": what the plan runs, in order.
  virtual const std::vector<std::string>& describe() const = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // Whether this backend has a kernel for node n (its op with its inputs' dtypes). The engine
  // lowers unsupported nodes through their decomposition, or refuses the function.
  virtual bool supports(const Graph& g, const Node& n) const = 0;
  // `persistent_offset[id]` locates variables, scalars and constants in the persistent pool.
  virtual std::unique_ptr<CompiledFunction> compile(const Graph& g, const FunctionSpec& fn, const SymbolBinding& binding,
                                                    const std::vector<int64_t>& persistent_offset) = 0;
  // The working memory all plans of this backend share (one engine's plans run one at a time).
  virtual int64_t workspace_bytes() const = 0;

  // The persistent pool, laid out by the engine (64-byte aligned byte offsets); the backend
  // allocates it with the alignment its memory needs, zeroed.
  virtual void allocate_persistent(int64_t bytes) = 0;
  virtual int64_t persistent_bytes() const = 0;
  virtual void upload(int64_t offset, const void* src, int64_t bytes) = 0;
  virtual void download(int64_t offset, void* dst, int64_t bytes) const = 0;
  // Returns when all queued work is done and its results are visible to the host.
  virtual void synchronize() = 0;

  // What the backend is running with, for people and benchmarks: name, BLAS, threads, ...
  virtual std::vector<std::pair<std::string, std::string>> info() const = 0;
};

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& options = {});
// Throws std::runtime_error naming the build option where Metal was not built in.
std::unique_ptr<Backend> make_metal_backend(const BackendOptions& options = {});
bool metal_available();

}  // namespace gometal
