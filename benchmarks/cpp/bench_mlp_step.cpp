// Times the whole MLP training step through the C++ API (no Python in the loop).
// Usage: bench_mlp_step [batch=128] [seconds=3] [threads=all]; prints one JSON line.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

#if defined(__linux__)
#include <unistd.h>
#endif

#include "mlp_step.h"

int main(int argc, char** argv) {
#if defined(__linux__)
  // OpenBLAS starts its own threads at load time unless told not to; gometal splits the
  // products over its own pool, so rerun once with the library pinned to one thread.
  const char* blas_threads = std::getenv("OPENBLAS_NUM_THREADS");
  if (!blas_threads || std::strcmp(blas_threads, "1") != 0) {
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    execv("/proc/self/exe", argv);
  }
#endif
  const int64_t batch = argc > 1 ? std::atoll(argv[1]) : 128;
  const double seconds = argc > 2 ? std::atof(argv[2]) : 3.0;
  if (argc > 3) gometal::set_num_threads(std::atoi(argv[3]));

  mlp::Built b = mlp::build({784, 512, 256, 10}, 1e-3f);
  gometal::Engine engine(b.graph, 0);
  mlp::init(engine, b, 0);
  engine.define("train", {b.x, b.y}, {b.loss}, b.effects, true);

  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(batch * 784));
  std::vector<int32_t> y(static_cast<size_t>(batch));
  for (float& v : x) v = normal(gen);
  for (auto& v : y) v = static_cast<int32_t>(gen() % 10);
  const int64_t xdims[2] = {batch, 784}, ydims[1] = {batch};
  const gometal::TensorView inputs[2] = {{x.data(), xdims, 2, gometal::DType::F32},
                                         {y.data(), ydims, 1, gometal::DType::I32}};

  using clock = std::chrono::steady_clock;
  float loss = 0;
  for (int i = 0; i < 20; ++i) loss = *engine.run("train", inputs, 2).floats(0);
  const auto t0 = clock::now();
  int64_t steps = 0;
  double elapsed = 0;
  while (elapsed < seconds) {
    loss = *engine.run("train", inputs, 2).floats(0);
    ++steps;
    elapsed = std::chrono::duration<double>(clock::now() - t0).count();
  }
  const double flops = 3.0 * 2.0 * (784 * 512 + 512 * 256 + 256 * 10) * static_cast<double>(batch);
  std::printf("{\"workload\": \"mlp-784-512-256-10\", \"batch\": %lld, \"threads\": %d, \"steps_per_s\": %.1f, "
              "\"gflops\": %.1f, \"final_loss\": %.4f, \"blas\": \"%s\"}\n",
              static_cast<long long>(batch), gometal::get_num_threads(), steps / elapsed,
              steps * flops / elapsed / 1e9, loss, gometal::blas_info().c_str());
  return 0;
}
