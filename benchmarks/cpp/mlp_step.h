// Builds a whole MLP training step (forward, cross-entropy, backward, Adam) with the C++ API
// alone: the program a C++ application writes to train without Python.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "gometal/engine.h"
#include "gometal/ir.h"

namespace mlp {

struct Built {
  gometal::Graph graph;
  int x = -1, y = -1, loss = -1;
  std::vector<int> effects;
  std::vector<std::pair<std::string, gometal::Shape>> params;
};

inline int dense(gometal::Graph& g, int x, int64_t in, int64_t out, const std::string& name, Built& b) {
  const int w = g.variable(name + ".weight", {out, in});
  const int bias = g.variable(name + ".bias", {out});
  b.params.push_back({name + ".weight", {out, in}});
  b.params.push_back({name + ".bias", {out}});
  return g.add(g.matmul(x, w, false, true), bias);
}

// sizes = {784, 512, 256, 10}: Dense+ReLU between, logits out; Adam(lr, 0.9, 0.999, 1e-8).
inline Built build(const std::vector<int64_t>& sizes, float lr) {
  using gometal::OpKind;
  Built b;
  gometal::Graph& g = b.graph;
  b.x = g.input("x", {gometal::kBatch, sizes.front()});
  b.y = g.input("y", {gometal::kBatch}, gometal::DType::I32);
  int h = b.x;
  for (size_t i = 0; i + 1 < sizes.size(); ++i) {
    h = dense(g, h, sizes[i], sizes[i + 1], "dense_" + std::to_string(i), b);
    if (i + 2 < sizes.size()) h = g.unary(OpKind::Relu, h);
  }
  // Cross-entropy from logits: logsumexp(z) - z[y], averaged over the batch.
  const int zmax = g.op(OpKind::StopGradient, {g.max(h, {1}, true)});
  const int z = g.sub(h, zmax);
  const int lse = g.unary(OpKind::Log, g.sum(g.unary(OpKind::Exp, z), {1}));
  gometal::Attrs depth;
  depth.depth = sizes.back();
  const int picked = g.sum(g.mul(z, g.op(OpKind::OneHot, {b.y}, depth)), {1});
  b.loss = g.mean(g.sub(lse, picked), {});

  std::vector<int> params;
  for (auto& [name, _] : b.params) params.push_back(g.find_named(OpKind::Variable, name));
  const std::vector<int> grads = g.gradients(b.loss, params);

  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  const int lr_node = g.scalar("lr", lr);
  const int step = g.variable("optimizer.step", {});
  const int t = g.add(step, g.constant(1.0f));
  b.effects.push_back(g.assign(step, t));
  const int bc1 = g.sub(g.constant(1.0f), g.op(OpKind::Pow, {g.constant(b1), t}));
  const int bc2 = g.sub(g.constant(1.0f), g.op(OpKind::Pow, {g.constant(b2), t}));
  const int step_size = g.div(lr_node, bc1);
  const int sqrt_bc2 = g.unary(OpKind::Sqrt, bc2);
  gometal::Attrs hyper;
  hyper.beta1 = b1;
  hyper.beta2 = b2;
  hyper.eps = eps;
  for (size_t i = 0; i < params.size(); ++i) {
    const gometal::Shape& shape = b.params[i].second;
    const int m = g.variable(b.params[i].first + ".exp_avg", shape);
    const int v = g.variable(b.params[i].first + ".exp_avg_sq", shape);
    b.effects.push_back(g.op(OpKind::AdamUpdate, {params[i], m, v, grads[i], step_size, sqrt_bc2}, hyper));
  }
  return b;
}

// PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
inline void init(gometal::Engine& engine, const Built& b, uint64_t seed) {
  uint32_t stream = 0;
  int64_t fan_in = 1;
  for (auto& [name, shape] : b.params) {
    if (shape.size() == 2) fan_in = shape[1];  // a bias uses its weight's fan-in
    std::vector<float> u = gometal::random_uniform(seed, stream++, gometal::numel(shape));
    const float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
    for (float& v : u) v = (2.0f * v - 1.0f) * bound;
    engine.set_variable(name, u.data(), shape);
  }
}

}  // namespace mlp
