// C++ tests of the engine without Python: the MLP step trains, steady-state steps make no
// heap allocation at all (counted by replacing the global operator new), and bad input
// is rejected with an exception before any state changes.
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <random>
#include <stdexcept>
#include <string>

#include "mlp_step.h"

namespace {
std::atomic<long> g_heap_allocations{0};
int g_failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
  if (!ok) ++g_failures;
}
}  // namespace

void* operator new(std::size_t n) {
  g_heap_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

int main() {
  const int64_t batch = 64;
  mlp::Built b = mlp::build({32, 64, 10}, 1e-2f);
  gometal::Engine engine(b.graph, 0);
  mlp::init(engine, b, 0);
  engine.define("train", {b.x, b.y}, {b.loss}, b.effects, true);

  // A learnable task: the label is the argmax of the first 10 features.
  std::mt19937 gen(1);
  std::normal_distribution<float> normal;
  std::vector<float> x(batch * 32);
  std::vector<int32_t> y(batch);
  for (float& v : x) v = normal(gen);
  for (int64_t i = 0; i < batch; ++i) {
    int best = 0;
    for (int j = 1; j < 10; ++j)
      if (x[i * 32 + j] > x[i * 32 + best]) best = j;
    y[i] = best;
  }
  const int64_t xdims[2] = {batch, 32}, ydims[1] = {batch};
  gometal::TensorView inputs[2] = {{x.data(), xdims, 2, gometal::DType::F32},
                                   {y.data(), ydims, 1, gometal::DType::I32}};

  const float first = *engine.run("train", inputs, 2).floats(0);
  check(std::fabs(first - std::log(10.0f)) < 0.5f, "initial loss near log(10): " + std::to_string(first));
  for (int i = 0; i < 10; ++i) engine.run("train", inputs, 2);

  const long heap_before = g_heap_allocations.load();
  const uint64_t engine_before = engine.stats().allocations;
  float last = 0;
  for (int i = 0; i < 100; ++i) last = *engine.run("train", inputs, 2).floats(0);
  const long heap_delta = g_heap_allocations.load() - heap_before;
  check(heap_delta == 0, "no heap allocation over 100 steady-state steps (saw " + std::to_string(heap_delta) + ")");
  check(engine.stats().allocations == engine_before, "engine allocation counter unchanged");
  check(last < 0.1f * first, "loss falls on a learnable task: " + std::to_string(first) + " -> " +
                                 std::to_string(last));

  // Bad input: a label out of range is rejected before anything runs.
  std::vector<float> w_before(64 * 32), w_after(64 * 32);
  engine.get_variable("dense_0.weight", w_before.data());
  y[3] = 10;
  bool threw = false;
  try {
    engine.run("train", inputs, 2);
  } catch (const std::invalid_argument& e) {
    threw = std::string(e.what()).find("label 10") != std::string::npos;
  }
  engine.get_variable("dense_0.weight", w_after.data());
  check(threw, "label out of range raises invalid_argument naming the label");
  check(w_before == w_after, "a rejected step leaves the weights untouched");

  // A bad shape is rejected when the graph is built, naming the op and both shapes.
  gometal::Graph g;
  const int a = g.input("a", {gometal::kBatch, 3});
  const int w = g.variable("w", {4, 5});
  std::string message;
  try {
    g.matmul(a, w);
  } catch (const std::invalid_argument& e) {
    message = e.what();
  }
  check(message.find("[matmul]") != std::string::npos && message.find("(batch, 3)") != std::string::npos &&
            message.find("(4, 5)") != std::string::npos,
        "matmul shape error names op and shapes: " + message);

  std::printf("%d passed, %d failed\n", 6 - g_failures, g_failures);
  return g_failures == 0 ? 0 : 1;
}
