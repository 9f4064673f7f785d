// A group runs at the position of its first member, so a node may join a group only
// when every input from outside the group is ready by then; an assign may join only
// when every other reader of its variable, and every check, has run by then.
#include "backends/cpu/passes/fusion.h"

#include <algorithm>
#include <utility>

#include "backends/cpu/attention.h"

namespace gometal {
namespace {

bool fusable(const Graph& g, int id) {
  const Node& n = g.node(id);
  if (n.op == OpKind::Assign) return true;
  return is_elementwise(n.op) && n.dtype == DType::F32;
}

// Keeps a group's register program within the kernel's slot limit (<= 3 inputs per member).
constexpr size_t kMaxGroupMembers = 32;

struct Group {
  std::vector<int> members;
  int first_pos;
};

void merge_attention_deltas(const Graph& g, const Schedule& s, const FunctionSpec& fn,
                            const std::vector<Shape>& shapes, Fusion& f);
void keep_gelu_slopes(const Graph& g, const Schedule& s, const FunctionSpec& fn, const std::vector<Shape>& shapes,
                      Fusion& f);

}  // namespace

Fusion fuse_elementwise(const Graph& g, const Schedule& s, const FunctionSpec& fn,
                        const std::vector<Shape>& shapes) {
  const int n = g.size();
  std::vector<int> group_of(n, -1);
  std::vector<Group> groups;

  // When a node's value becomes available: leaves always; a grouped node when its group runs.
  auto ready_at = [&](int id) -> int {
    const int root = s.alias_root[id];
    if (g.node(root).inputs.empty()) return -1;
    if (group_of[root] >= 0) return groups[group_of[root]].first_pos;
    return s.position[root];
  };

  // Readers of each variable, for the assign rule, and consumers of each value.
  std::vector<std::vector<int>> readers(n), consumers(n);
  for (int id : s.order)
    for (int in : g.node(id).inputs) {
      const int root = s.alias_root[in];
      if (g.node(root).op == OpKind::Variable) readers[root].push_back(id);
      consumers[root].push_back(id);
    }

  // Checks run before every effect: an assign may not join a group that runs before one.
  int last_check = -1;
  for (int id : s.order)
    if (is_check(g.node(id).op)) last_check = std::max(last_check, s.position[id]);

  auto can_join = [&](int gi, int id) {
    const Group& grp = groups[gi];
    if (grp.members.size() >= kMaxGroupMembers) return false;
    const Node& node = g.node(id);
    for (int in : node.inputs) {
      const int root = s.alias_root[in];
      if (group_of[root] == gi && root == in) continue;
      if (group_of[root] == gi) return false;  // an alias of a member: needs memory
      if (ready_at(in) >= grp.first_pos) return false;
    }
    if (node.op == OpKind::Assign) {
      if (grp.first_pos <= last_check) return false;
      const int var = node.inputs[0];
      for (int r : readers[var])
        if (r != id && group_of[r] != gi && s.position[r] >= grp.first_pos) return false;
    }
    return true;
  };

  // Group h may run later, as part of group `into`, when all its inputs are ready by then
  // and nothing outside the two groups reads its values before then.
  auto can_move_into = [&](int h, int into) {
    const int target = groups[into].first_pos;
    if (groups[h].first_pos >= target) return false;
    if (groups[h].members.size() + groups[into].members.size() > kMaxGroupMembers) return false;
    for (int m : groups[h].members) {
      for (int in : g.node(m).inputs) {
        const int root = s.alias_root[in];
        if (group_of[root] == h && root == in) continue;
        if (group_of[root] == h || ready_at(in) >= target) return false;
      }
      for (int c : consumers[m]) {
        const int cg = group_of[c];
        if (cg == h || cg == into) continue;
        const int exec = cg >= 0 ? groups[cg].first_pos : s.position[c];
        if (exec <= target) return false;
      }
      if (g.node(m).op == OpKind::Assign)
        for (int r : readers[g.node(m).inputs[0]])
          if (group_of[r] != h && group_of[r] != into && s.position[r] >= target) return false;
    }
    return true;
  };

  for (int id : s.order) {
    if (!fusable(g, id)) continue;
    const Node& node = g.node(id);
    int chosen = -1;
    for (int in : node.inputs) {
      const int gi = group_of[in];
      if (gi < 0 || shapes[in] != shapes[id]) continue;
      if (can_join(gi, id)) {
        chosen = gi;
        break;
      }
    }
    if (chosen < 0) {
      chosen = static_cast<int>(groups.size());
      groups.push_back({{}, s.position[id]});
    }
    groups[chosen].members.push_back(id);
    group_of[id] = chosen;
    // Pull in earlier groups that only feed this one (e.g. b2 * v, which reads nothing but
    // leaves), so a whole update runs as one pass.
    for (int in : node.inputs) {
      const int h = group_of[in];
      if (h < 0 || h == chosen || shapes[in] != shapes[id] || !can_move_into(h, chosen)) continue;
      for (int m : groups[h].members) group_of[m] = chosen;
      auto& members = groups[chosen].members;
      members.insert(members.end(), groups[h].members.begin(), groups[h].members.end());
      std::sort(members.begin(), members.end(), [&](int a, int b) { return s.position[a] < s.position[b]; });
      groups[h].members.clear();
    }
  }

  // A member whose readers all sit in one later group, and whose inputs are stored anyway,
  // moves into that group: it is then computed where it is read instead of being stored
  // in between (relu's mask, kept from the forward pass to the backward pass).
  std::vector<char> is_output(n, 0);
  for (int out : fn.outputs) is_output[s.alias_root[out]] = 1;
  auto stored_anyway = [&](int root, int gi) {
    for (int c : consumers[root])
      if (group_of[c] != gi) return true;
    return is_output[root] != 0;
  };
  for (int gi = 0; gi < static_cast<int>(groups.size()); ++gi) {
    auto& members = groups[gi].members;
    for (size_t i = 0; i < members.size();) {
      const int m = members[i];
      const Node& node = g.node(m);
      int into = -1;
      bool movable = node.op != OpKind::Assign && !is_output[m] && !consumers[m].empty() &&
                     s.position[m] != groups[gi].first_pos;
      for (int c : consumers[m]) {
        const int cg = group_of[c];
        const bool direct = std::find(g.node(c).inputs.begin(), g.node(c).inputs.end(), m) != g.node(c).inputs.end();
        if (cg < 0 || cg == gi || (into >= 0 && cg != into) || !direct) movable = false;
        into = cg;
      }
      movable = movable && groups[into].first_pos > groups[gi].first_pos &&
                groups[into].members.size() < kMaxGroupMembers && shapes[m] == shapes[groups[into].members.front()];
      for (int in : node.inputs) {
        const int root = s.alias_root[in];
        if (movable && group_of[root] == gi && (root != in || !stored_anyway(root, gi))) movable = false;
      }
      if (!movable) {
        ++i;
        continue;
      }
      members.erase(members.begin() + static_cast<std::ptrdiff_t>(i));
      auto& target = groups[into].members;
      target.push_back(m);
      std::sort(target.begin(), target.end(), [&](int a, int b) { return s.position[a] < s.position[b]; });
      group_of[m] = into;
    }
  }

  // Steps in execution order: a group at its first member, other nodes where they stand.
  Fusion f;
  f.step_of.assign(n, -1);
  f.materialized.assign(n, 0);
  for (int id : s.order) {
    const int gi = group_of[id];
    if (gi >= 0) {
      // A group runs at its first_pos (merged groups hold members scheduled before it).
      if (s.position[id] != groups[gi].first_pos) continue;
      const int step = static_cast<int>(f.steps.size());
      f.steps.push_back({true, groups[gi].members});
      for (int m : groups[gi].members) f.step_of[m] = step;
    } else {
      f.step_of[id] = static_cast<int>(f.steps.size());
      f.steps.push_back({false, {id}});
    }
  }

  // A value needs a buffer when something outside its step reads it, or run() returns it.
  for (int id : s.order) {
    for (int in : g.node(id).inputs) {
      const int root = s.alias_root[in];
      if (f.step_of[root] >= 0 && (f.step_of[root] != f.step_of[id] || root != in))
        f.materialized[root] = 1;
    }
    if (!f.steps[f.step_of[id]].fused) f.materialized[id] = !is_effect(g.node(id).op);
  }
  for (int out : fn.outputs) {
    const int root = s.alias_root[out];
    if (f.step_of[root] >= 0) f.materialized[root] = 1;
  }
  for (int id : s.order)
    if (is_effect(g.node(id).op)) f.materialized[id] = 0;
  keep_norm_statistics(g, s, fn, shapes, f);
  merge_attention_deltas(g, s, fn, shapes, f);
  keep_gelu_slopes(g, s, fn, shapes, f);
  return f;
}

// Up to one block of keys: past it each head's dq rows take their sums from every key block,
// and rows 3 H D apart span more pages than the TLB holds (D-long, T = 1024: the gradient ran
// 4 to 8 ms a step slower, more than the transpose it saved).
bool time_major_attention_grad(const Graph& g, int grad, int transpose, const std::vector<Shape>& shapes) {
  const Node& t = g.node(transpose);
  return g.node(grad).op == OpKind::AttentionGrad && t.op == OpKind::Transpose && t.inputs[0] == grad &&
         t.attrs.ints == std::vector<int64_t>{1, 3, 0, 2, 4} && shapes[grad].size() == 5 && t.dtype == DType::F32 &&
         shapes[grad][3] <= kAttentionKeyBlock;
}

bool time_major_attention_cotangent(const Graph& g, int grad, const std::vector<Shape>& shapes) {
  const Node& n = g.node(grad);
  if (n.op != OpKind::AttentionGrad) return false;
  const Node& t = g.node(n.inputs[3]);
  if (t.op != OpKind::Transpose || t.dtype != DType::F32 || t.attrs.ints != std::vector<int64_t>{0, 2, 1, 3})
    return false;
  const Node& split = g.node(t.inputs[0]);
  const Shape &heads = shapes[t.inputs[0]], &q = shapes[n.inputs[0]];
  return split.op == OpKind::Reshape && heads.size() == 4 && shapes[split.inputs[0]].size() == 3 && q.size() == 4 &&
         shapes[split.inputs[0]] == Shape{q[0], q[2], q[1] * q[3]} && q[2] <= kAttentionKeyBlock;
}

ValueReaders value_readers(const Graph& g, const Schedule& s, const FunctionSpec& fn) {
  const int n = g.size();
  ValueReaders v{std::vector<std::vector<int>>(n), std::vector<char>(n, 0)};
  for (int i = 0; i < n; ++i) {
    if (!s.needed[i]) continue;
    const std::vector<int>& in = g.node(i).inputs;
    for (size_t k = 0; k < in.size(); ++k)
      if (std::find(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(k), in[k]) == in.begin() + k)
        v.readers[in[k]].push_back(i);
  }
  for (int out : fn.outputs) v.returned[s.alias_root[out]] = 1;
  return v;
}

void drop_steps(const std::vector<char>& dropped, Fusion& f) {
  std::vector<Step> kept;
  for (size_t st = 0; st < f.steps.size(); ++st)
    if (!dropped[st]) kept.push_back(std::move(f.steps[st]));
  f.steps = std::move(kept);
  for (size_t st = 0; st < f.steps.size(); ++st)
    for (int id : f.steps[st].nodes) f.step_of[id] = static_cast<int>(st);
}

bool effect_between(const Graph& g, const Fusion& f, int from, int to) {
  for (int st = from + 1; st < to; ++st)
    for (int id : f.steps[st].nodes)
      if (is_effect(g.node(id).op)) return true;
  return false;
}

namespace {

// The gradient ops that may read a norm's kept statistics.
bool reads_norm_statistics(const Node& forward, const Node& reader) {
  const bool layer = forward.op == OpKind::LayerNorm;
  const OpKind dx = layer ? OpKind::LayerNormGrad : OpKind::RmsNormGrad;
  const OpKind affine = layer ? OpKind::LayerNormAffineGrad : OpKind::RmsNormAffineGrad;
  return (reader.op == dx || reader.op == affine) && reader.inputs[0] == forward.inputs[0] &&
         reader.attrs.eps == forward.attrs.eps;
}

// Puts each norm gradient and its affine gradient (same x, g and kept statistics) into one
// step, at the earlier one's place: one pass reads x and g for both.
void pair_norm_gradients(const Graph& g, Fusion& f) {
  const int n = g.size();
  auto lone_step = [&](int id) { return f.step_of[id] >= 0 && f.steps[f.step_of[id]].nodes.size() == 1; };
  std::vector<char> dropped(f.steps.size(), 0);
  for (int dx = 0; dx < n; ++dx) {
    const Node& grad = g.node(dx);
    if ((grad.op != OpKind::LayerNormGrad && grad.op != OpKind::RmsNormGrad) || f.norm_stats_slot[dx] < 0 ||
        !lone_step(dx))
      continue;
    const int slot = f.norm_stats_slot[dx];
    const int forward_step = f.step_of[f.norm_stats[slot].forward];
    const OpKind affine_op = grad.op == OpKind::LayerNormGrad ? OpKind::LayerNormAffineGrad : OpKind::RmsNormAffineGrad;
    for (int affine = 0; affine < n; ++affine) {
      const Node& sums = g.node(affine);
      if (sums.op != affine_op || f.norm_stats_slot[affine] != slot || sums.inputs[1] != grad.inputs[1] ||
          !lone_step(affine))
        continue;
      const int first = std::min(f.step_of[dx], f.step_of[affine]), last = std::max(f.step_of[dx], f.step_of[affine]);
      // Both read the statistics only after the forward step kept them; dx's weight must be
      // ready at the earlier step (a variable is: leaves have no step).
      if (forward_step >= first) continue;
      if (grad.inputs.size() > 2 && f.step_of[grad.inputs[2]] >= first) continue;
      f.steps[first].nodes = {dx, affine};
      f.step_of[dx] = f.step_of[affine] = first;
      dropped[last] = 1;
      break;
    }
  }
  drop_steps(dropped, f);
}

// An attention_grad's delta = sum(g * out, axis 3), each read by nothing else, joins the
// gradient's step: its kernel takes each row's dot product while it reads g anyway, where the
// mul and the sum made a pass of their own over g and out (a tiled pair of steps).
void merge_attention_deltas(const Graph& g, const Schedule& s, const FunctionSpec& fn,
                            const std::vector<Shape>& shapes, Fusion& f) {
  const ValueReaders value = value_readers(g, s, fn);
  auto only_reader = [&](int id, int reader) {
    return !value.returned[id] && value.readers[id] == std::vector<int>{reader};
  };
  auto alone = [&](int id) {
    const int st = f.step_of[id];
    return st >= 0 && !f.steps[st].fused && f.steps[st].nodes == std::vector<int>{id};
  };
  std::vector<char> dropped(f.steps.size(), 0);
  for (int id : s.order) {
    const Node& grad = g.node(id);
    if (grad.op != OpKind::AttentionGrad || !alone(id)) continue;
    const int delta = grad.inputs[5];
    const Node& sum = g.node(delta);
    if (sum.op != OpKind::Sum || sum.attrs.keepdims || sum.attrs.ints != std::vector<int64_t>{3} ||
        !only_reader(delta, id) || !alone(delta))
      continue;
    const int mul = sum.inputs[0];
    const Node& product = g.node(mul);
    const int cotangent = grad.inputs[3];
    const int mul_at = f.step_of[mul];
    if (product.op != OpKind::Mul || product.dtype != DType::F32 || !only_reader(mul, delta) || mul_at < 0 ||
        !f.steps[mul_at].fused ||
        (product.inputs[0] != cotangent && product.inputs[1] != cotangent) ||
        shapes[product.inputs[0]] != shapes[cotangent] || shapes[product.inputs[1]] != shapes[cotangent])
      continue;
    // Both factors must have buffers once the mul leaves its group.
    bool stored = true;
    for (int in : product.inputs) stored &= f.step_of[s.alias_root[in]] != mul_at || f.materialized[s.alias_root[in]];
    if (!stored) continue;
    // The mul and the sum move down to the gradient's step: nothing between may write what they read.
    if (effect_between(g, f, mul_at, f.step_of[id])) continue;
    // The mul leaves its group (the cotangent's own product, say): nothing there reads it.
    std::vector<int>& group = f.steps[mul_at].nodes;
    group.erase(std::find(group.begin(), group.end(), mul));
    if (group.empty()) dropped[mul_at] = 1;
    dropped[f.step_of[delta]] = 1;
    f.steps[f.step_of[id]].nodes = {id, mul, delta};
    f.step_of[mul] = f.step_of[delta] = f.step_of[id];
    f.materialized[mul] = f.materialized[delta] = 0;
  }
  // Then the transpose back to the product's layout, the gradient's only reader, joins it too.
  for (int id : s.order) {
    if (g.node(id).op != OpKind::AttentionGrad || f.step_of[id] < 0 || dropped[f.step_of[id]] ||
        value.returned[id] || value.readers[id].size() != 1)
      continue;
    const int transpose = value.readers[id][0];
    Step& step = f.steps[f.step_of[id]];
    if (step.fused || step.nodes.front() != id || !alone(transpose) ||
        !time_major_attention_grad(g, id, transpose, shapes))
      continue;
    dropped[f.step_of[transpose]] = 1;
    f.step_of[transpose] = f.step_of[id];
    step.nodes.push_back(transpose);
    f.materialized[id] = 0;
  }
  // And the transpose that split g into heads, read nowhere else, moves down into it.
  for (int id : s.order) {
    if (g.node(id).op != OpKind::AttentionGrad || f.step_of[id] < 0 || !time_major_attention_cotangent(g, id, shapes))
      continue;
    const int cotangent = g.node(id).inputs[3], at = f.step_of[id];
    Step& step = f.steps[at];
    bool inside = !step.fused && step.nodes.front() == id && !dropped[at] && alone(cotangent) &&
                  f.step_of[cotangent] < at && !value.returned[cotangent];
    for (int r : value.readers[cotangent]) inside &= f.step_of[r] == at;
    if (!inside || effect_between(g, f, f.step_of[cotangent], at)) continue;
    dropped[f.step_of[cotangent]] = 1;
    step.nodes.push_back(cotangent);
    f.materialized[cotangent] = 0;
  }
  drop_steps(dropped, f);
}

// Gives a fused gelu and the later fused gelu_grads of its x one kept slope buffer. When
// nothing else reads x (a member of the gelu's group: a transformer's biased product), x loses
// its buffer too: the forward step stores the slope where it stored x.
void keep_gelu_slopes(const Graph& g, const Schedule& s, const FunctionSpec& fn, const std::vector<Shape>& shapes,
                      Fusion& f) {
  f.gelu_slope_slot.assign(g.size(), -1);
  const ValueReaders value = value_readers(g, s, fn);
  auto fused_alone = [&](int id) {  // in a fused step whose elements are this node's
    const int st = f.step_of[id];
    return st >= 0 && f.steps[st].fused && shapes[f.steps[st].nodes.front()] == shapes[id];
  };
  for (int id : s.order) {
    const Node& gelu = g.node(id);
    if (gelu.op != OpKind::Gelu || gelu.dtype != DType::F32 || !fused_alone(id) || numel(shapes[id]) < 2) continue;
    const int x = gelu.inputs[0], slot = static_cast<int>(f.gelu_slopes.size());
    bool every_reader_kept = !value.returned[x] && s.alias_root[x] == x;
    for (int r : value.readers[x]) {
      const Node& grad = g.node(r);
      const bool kept = grad.op == OpKind::GeluGrad && grad.inputs[0] == x && grad.inputs[1] != x &&
                        fused_alone(r) && shapes[r] == shapes[id] && f.step_of[r] > f.step_of[id];
      if (kept) f.gelu_slope_slot[r] = slot;
      every_reader_kept &= kept || r == id;
    }
    if (std::find(f.gelu_slope_slot.begin(), f.gelu_slope_slot.end(), slot) == f.gelu_slope_slot.end()) continue;
    f.gelu_slope_slot[id] = slot;
    f.gelu_slopes.push_back(std::make_shared<std::vector<float>>(static_cast<size_t>(numel(shapes[id]))));
    if (every_reader_kept && f.step_of[x] == f.step_of[id]) f.materialized[x] = 0;
  }
}

}  // namespace

void keep_norm_statistics(const Graph& g, const Schedule& s, const FunctionSpec& fn, const std::vector<Shape>& shapes,
                          Fusion& f) {
  f.norm_stats_slot.assign(g.size(), -1);
  const ValueReaders value = value_readers(g, s, fn);
  for (int id : s.order) {
    const Node& forward = g.node(id);
    if ((forward.op != OpKind::LayerNorm && forward.op != OpKind::RmsNorm) || f.step_of[id] < 0) continue;
    const int slot = static_cast<int>(f.norm_stats.size());
    for (int r : value.readers[forward.inputs[0]])
      if (f.step_of[r] >= 0 && reads_norm_statistics(forward, g.node(r))) f.norm_stats_slot[r] = slot;
    if (std::find(f.norm_stats_slot.begin(), f.norm_stats_slot.end(), slot) == f.norm_stats_slot.end()) continue;
    f.norm_stats_slot[id] = slot;
    const Shape& xs = shapes[forward.inputs[0]];
    const int64_t rows = xs.empty() ? 1 : numel(xs) / xs.back();
    f.norm_stats.push_back({id, std::make_shared<std::vector<float>>(static_cast<size_t>(2 * rows))});
  }
  pair_norm_gradients(g, f);
}

}  // namespace gometal
