#include "passes/schedule.h"

#include "ir/op_registry.h"

#include <queue>
#include <stdexcept>
#include <string>

namespace gometal {

bool is_alias(const Graph& g, int id) {
  const Node& n = g.node(id);
  const AliasRule alias = op_def(n.op).alias;
  return alias != nullptr && alias(g, n);
}

namespace {

// 0: an all_reduce_mean_start, or a node whose every consumer is urgency 0; 2: an
// all_reduce_mean_wait; 1: the rest. A wait's reads do not count (it reads its start's input
// only to keep that buffer alive). Inputs precede their consumers in a graph, so one pass
// from the last node back sees every consumer first.
std::vector<int> collective_urgency(const Graph& g, const std::vector<char>& needed) {
  const int n = g.size();
  std::vector<int> urgency(n, 1), consumers(n, 0), eager_consumers(n, 0);
  for (int i = n - 1; i >= 0; --i) {
    if (!needed[i]) continue;
    const Node& node = g.node(i);
    if (node.op == OpKind::AllReduceMeanStart) urgency[i] = 0;
    else if (node.op == OpKind::AllReduceMeanWait) {
      urgency[i] = 2;
      continue;
    } else if (consumers[i] > 0 && consumers[i] == eager_consumers[i] && !node.inputs.empty()) urgency[i] = 0;
    for (int in : node.inputs) {
      ++consumers[in];
      eager_consumers[in] += urgency[i] == 0;
    }
  }
  return urgency;
}

}  // namespace

Schedule schedule_function(const Graph& g, const FunctionSpec& fn) {
  const int n = g.size();
  Schedule s;
  s.needed.assign(n, 0);
  s.position.assign(n, -1);
  s.alias_root.resize(n);

  std::vector<int> stack(fn.outputs);
  for (int e : fn.effects) {
    if (!is_effect(g.node(e).op))
      throw std::invalid_argument("[define] '" + fn.name + "': effect node " + std::to_string(e) +
                                  " is a '" + std::string(op_name(g.node(e).op)) +
                                  "', not an assign or an optimizer update");
    stack.push_back(e);
  }
  while (!stack.empty()) {
    const int id = stack.back();
    stack.pop_back();
    if (s.needed[id]) continue;
    s.needed[id] = 1;
    for (int in : g.node(id).inputs) stack.push_back(in);
  }
  for (int i = 0; i < n; ++i) {
    if (!s.needed[i]) continue;
    const Node& node = g.node(i);
    if (node.op == OpKind::Input) {
      bool declared = false;
      for (int in : fn.inputs) declared |= in == i;
      if (!declared)
        throw std::invalid_argument("[define] '" + fn.name + "' needs input '" + node.attrs.name +
                                    "', which is not among its inputs");
    }
    s.alias_root[i] = is_alias(g, i) ? s.alias_root[node.inputs[0]] : i;
  }

  // Dependencies: data edges, "assign(V) after every other reader of V", checks before effects.
  std::vector<std::vector<int>> succ(n);
  std::vector<int> indegree(n, 0);
  std::vector<int> assign_of(n, -1);
  for (int e : fn.effects)
    for (int var : written_variables(g.node(e))) {
      if (assign_of[var] >= 0 && assign_of[var] != e)
        throw std::invalid_argument("[define] '" + fn.name + "' writes variable '" +
                                    g.node(var).attrs.name + "' twice");
      assign_of[var] = e;
    }
  auto edge = [&](int from, int to) {
    succ[from].push_back(to);
    ++indegree[to];
  };
  for (int i = 0; i < n; ++i) {
    if (!s.needed[i]) continue;
    for (int in : g.node(i).inputs) {
      edge(in, i);
      const int root = s.alias_root[in];
      const int a = assign_of[root];
      if (a >= 0 && a != i && g.node(root).op == OpKind::Variable) edge(i, a);
    }
  }
  // A check runs before every effect, so a failed check leaves every variable as it was.
  for (int i = 0; i < n; ++i)
    if (s.needed[i] && is_check(g.node(i).op))
      for (int e : fn.effects) edge(i, e);
  // Kahn's algorithm, lowest id first: keeps the builder's order where it is legal. Non-blocking
  // collectives overlap the kernels between their halves, so a start (with the nodes that only
  // feed starts: a bucket's packing) runs as soon as it is ready, a wait only when nothing else is.
  const std::vector<int> urgency = collective_urgency(g, s.needed);
  using Entry = std::pair<int, int>;  // (urgency, id)
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> ready;
  for (int i = 0; i < n; ++i)
    if (s.needed[i] && indegree[i] == 0) ready.push({urgency[i], i});
  int visited = 0;
  while (!ready.empty()) {
    const int id = ready.top().second;
    ready.pop();
    ++visited;
    const Node& node = g.node(id);
    if (!node.inputs.empty() && !is_alias(g, id)) {
      s.position[id] = static_cast<int>(s.order.size());
      s.order.push_back(id);
    }
    for (int t : succ[id])
      if (--indegree[t] == 0) ready.push({urgency[t], t});
  }
  int needed_count = 0;
  for (char c : s.needed) needed_count += c;
  if (visited != needed_count)
    throw std::invalid_argument("[define] '" + fn.name +
                                "': an assign feeds a value that is read before it (cyclic dependency)");
  return s;
}

}  // namespace gometal
