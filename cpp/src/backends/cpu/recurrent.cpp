#include "backends/cpu/recurrent.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "backends/cpu/passes/summed_products.h"
#include "backends/cpu/recurrent_cells.h"
#include "backends/cpu/recurrent_gemm.h"
#include "ir/ops/recurrent.h"

// -march=native on AVX-512 CPUs still vectorizes loops 8 floats wide; the plain loops
// here run 16 wide (GCC only: Clang spells it differently). The gate math is written
// in explicit vectors (recurrent_cells.h).
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("prefer-vector-width=512")
#endif

namespace gometal {
namespace {

using namespace recurrent_cells;

// Every length in [1, T]: a step past the sequence's end would read or write another row.
void check_lengths(const int32_t* lengths, int64_t n, int64_t t, const char* op) {
  if (lengths == nullptr) return;
  for (int64_t i = 0; i < n; ++i)
    if (lengths[i] < 1 || lengths[i] > t)
      throw std::invalid_argument(std::string("[") + op + "] lengths must lie in [1, T] with T = " + std::to_string(t) +
                                  " (the sequence length), got " + std::to_string(lengths[i]) + " at index " +
                                  std::to_string(i));
}

// Every id picks a row of the table: [0, rows).
void check_ids(const int32_t* ids, int64_t n, int64_t t, int64_t rows) {
  if (ids == nullptr) return;
  for (int64_t i = 0; i < n * t; ++i)
    if (ids[i] < 0 || ids[i] >= rows)
      throw std::invalid_argument("[recurrence] ids must lie in [0, V) with V = " + std::to_string(rows) +
                                  " (the table's rows), got " + std::to_string(ids[i]) + " at (" +
                                  std::to_string(i / t) + ", " + std::to_string(i % t) + ")");
}

// Runs body(row) for rows [0, n) on the pool, one block of rows per thread: rows cost about
// the same, and every further task is one more claim on the pool's shared counter, each
// step (2-thread recurrences 2% faster than with 8 tasks per thread).
template <typename F>
void for_rows(ThreadPool& pool, int64_t n, int64_t floats_per_row, F&& body) {
  constexpr int64_t kSerialFloats = 1 << 14;  // below this a task switch costs more than the work
  const int tasks = n * floats_per_row < kSerialFloats ? 1 : static_cast<int>(std::min<int64_t>(n, pool.size()));
  if (tasks <= 1) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
  pool.parallel_for(tasks, [&](int task, int) {
    int64_t lo, hi;
    split_range(n, tasks, task, 1, &lo, &hi);
    for (int64_t i = lo; i < hi; ++i) body(i);
  });
}

// The rows a time loop runs and how each step's work is shared: rows [lo, hi) with every step
// on the calling thread (pool null), or the whole batch with each step split over the pool.
struct RowSpan {
  int64_t lo = 0, hi = 0;
  ThreadPool* pool = nullptr;
  int64_t rows() const { return hi - lo; }
};

// Runs loop(span) over the batch's n rows. With at least kMinRows rows a thread, each thread
// runs its own block of rows through every step with no handoff inside the time loop: a step
// split over the pool waits on it twice a step (E-infer and E at 2 threads lost to that).
template <typename F>
void over_rows(ThreadPool& pool, int64_t n, F&& loop) {
  constexpr int64_t kMinRows = 4;
  const int tasks = static_cast<int>(std::min<int64_t>(pool.size(), n / kMinRows));
  if (tasks <= 1) return loop(RowSpan{0, n, &pool});
  pool.parallel_for(tasks, [&](int task, int) {
    int64_t lo, hi;
    split_range(n, tasks, task, 1, &lo, &hi);
    loop(RowSpan{lo, hi, nullptr});
  });
}

// Runs body(row) for the span's rows.
template <typename F>
void each_row(const RowSpan& span, int64_t floats_per_row, F&& body) {
  if (span.pool == nullptr) {
    for (int64_t i = span.lo; i < span.hi; ++i) body(i);
    return;
  }
  for_rows(*span.pool, span.rows(), floats_per_row, [&](int64_t i) { body(span.lo + i); });
}

// The span's rows of C = A1 times a packed weight plus A2 times another (s2.k = 0: none);
// the sources' and c's pointers are at the batch's first row.
void span_pair(const RowSpan& span, recurrent_gemm::Source s1, recurrent_gemm::Source s2, int64_t cols, float* c,
               int64_t ldc) {
  s1.a += span.lo * s1.lda;
  if (s2.k > 0) s2.a += span.lo * s2.lda;
  c += span.lo * ldc;
  if (span.pool == nullptr) recurrent_gemm::multiply_pair_here(s1, s2, span.rows(), cols, c, ldc);
  else recurrent_gemm::multiply_pair(*span.pool, s1, s2, span.rows(), cols, c, ldc);
}

// The span's rows of C = A times a packed weight.
void span_product(const RowSpan& span, const float* a, int64_t lda, int64_t k, const float* packed,
                  int64_t cols, float* c, int64_t ldc) {
  span_pair(span, {a, lda, k, packed}, {}, cols, c, ldc);
}

struct RecurrenceKernel final : Kernel {
  RecurrentLayout l;
  int64_t batch = 0, steps = 0;
  int64_t g_width = 0;  // recurrence_grad: the output gradient's columns (all, or h's alone)
  int64_t table_rows = 0;  // with ids: seq is a table of projected rows that ids pick
  int64_t input_width = 0;  // with w_ih: seq is the sequence x (N, T, I), projected step by step
  int64_t input_ld = 0;     // x's row stride: I, or a wider source's when x is a slice read in place
  bool reverse = false, gradient = false;
  BufRef seq, y, h0, c0, w_hh, w_hr, b_hn, bias, lengths, ids, w_ih, out;

  // Zeros stand in for a bias the op lacks, for xp when the step's product includes x, and for
  // a cell state's absent output gradient: one code path for all.
  int64_t shared_floats() const override {
    return state_floats() + packed_weight_floats() + (gradient ? l.hidden : l.gate_width());
  }
  int64_t state_floats() const { return batch * (3 * l.out + 2 * l.hidden + l.gate_width()); }
  // W_hh, W_hr and W_ih packed once per call for the per-step products (recurrent_gemm.h).
  int64_t packed_hh_floats() const {
    return gradient ? recurrent_gemm::packed_floats(l.gate_width(), l.out)
                    : recurrent_gemm::packed_floats(l.out, l.gate_width());
  }
  int64_t packed_hr_floats() const {
    return !l.projected ? 0
           : gradient   ? recurrent_gemm::packed_floats(l.out, l.hidden)
                        : recurrent_gemm::packed_floats(l.hidden, l.out);
  }
  int64_t packed_weight_floats() const { return packed_hh_floats() + packed_hr_floats() + packed_ih_floats(); }
  int64_t packed_ih_floats() const {
    return w_ih.region == Region::None ? 0 : recurrent_gemm::packed_floats(input_width, l.gate_width());
  }

  int64_t length(const int32_t* lens, int64_t n) const { return lens == nullptr ? steps : lens[n]; }
  int64_t step_at(int64_t s) const { return reverse ? steps - 1 - s : s; }
  // The step a sequence ran before step t, or -1 when t is its first (the state is h0, c0).
  int64_t previous(int64_t t, int64_t len) const {
    const int64_t p = reverse ? t + 1 : t - 1;
    return p < 0 || p >= len ? -1 : p;
  }

  void run(const ExecContext& ctx) const override {
    const int32_t* lens = lengths.region == Region::None ? nullptr : ctx.iptr(lengths);
    check_lengths(lens, batch, steps, gradient ? "recurrence_grad" : "recurrence");
    if (gradient) backward(ctx, lens);
    else forward(ctx, lens);
  }

  void forward(const ExecContext& ctx, const int32_t* lens) const {
    const int64_t n_ = batch, H = l.hidden, P = l.out, GH = l.gate_width(), W = l.width();
    float* h = ctx.shared;
    float* c = h + n_ * P;
    float* a = c + n_ * H;
    float* hraw = a + n_ * GH;
    float* hnew = hraw + n_ * H;
    float* packed_hh = ctx.shared + state_floats();
    float* packed_hr = packed_hh + packed_hh_floats();
    recurrent_gemm::pack_transposed(*ctx.pool, ctx.ptr(w_hh), GH, P, packed_hh);
    if (l.projected) recurrent_gemm::pack_transposed(*ctx.pool, ctx.ptr(w_hr), P, H, packed_hr);
    // With w_ih each step's product sums x w_ih^T and h w_hh^T: the gate math adds zeros for xp.
    const int64_t I = input_width;
    float* packed_ih = packed_hr + packed_hr_floats();
    if (I > 0) recurrent_gemm::pack_transposed(*ctx.pool, ctx.ptr(w_ih), GH, I, packed_ih);
    float* zeros = packed_hh + packed_weight_floats();
    if (bias.region == Region::None || I > 0) std::memset(zeros, 0, sizeof(float) * GH);
    const float* b = bias.region == Region::None ? zeros : ctx.ptr(bias);
    std::memcpy(h, ctx.ptr(h0), sizeof(float) * n_ * P);
    if (l.cell == Cell::Lstm) std::memcpy(c, ctx.ptr(c0), sizeof(float) * n_ * H);
    const float* xp = ctx.ptr(seq);
    const int32_t* row_ids = ids.region == Region::None ? nullptr : ctx.iptr(ids);
    check_ids(row_ids, n_, steps, table_rows);
    const float* bhn = l.cell == Cell::Gru ? ctx.ptr(b_hn) : nullptr;
    float* ys = ctx.ptr(out);
    // An LSTM's training form keeps its gates in y: the product lands there and the gate
    // math runs in place, saving a copy per row and step.
    const bool gates_in_y = l.cell == Cell::Lstm && !l.lean;
    over_rows(*ctx.pool, n_, [&](const RowSpan& span) {
      for (int64_t s = 0; s < steps; ++s) {
        const int64_t t = step_at(s);
        float* gates = gates_in_y ? ys + t * W + l.gates_col() : a;
        const int64_t ld = gates_in_y ? steps * W : GH;
        if (I > 0)
          span_pair(span, {xp + t * input_ld, steps * input_ld, I, packed_ih}, {h, P, P, packed_hh}, GH, gates, ld);
        else span_product(span, h, P, P, packed_hh, GH, gates, ld);
        each_row(span, W, [&](int64_t n) {
          float* yr = ys + (n * steps + t) * W;
          if (t >= length(lens, n)) {
            std::memset(yr, 0, sizeof(float) * W);
            if (l.projected) std::memset(hraw + n * H, 0, sizeof(float) * H);
            return;
          }
          const int64_t row = row_ids == nullptr ? n * steps + t : row_ids[n * steps + t];
          const float* x = I > 0 ? zeros : xp + row * GH;
          float* hr = h + n * P;
          float* ar = gates_in_y ? yr + l.gates_col() : a + n * GH;
          switch (l.cell) {
            case Cell::RnnTanh: case Cell::RnnRelu:
              if (l.cell == Cell::RnnTanh) tanh_of_sum(x, b, ar, H);
              else relu_of_sum(x, b, ar, H);
              std::memcpy(hr, ar, sizeof(float) * H);
              std::memcpy(yr, ar, sizeof(float) * H);
              break;
            case Cell::Lstm: {
              // With a projection h goes to hraw, and the step's product below sets h and y.
              // sequence_only: the cell state has no column in y (written twice to the state instead).
              float* c_out = l.sequence_only ? c + n * H : yr + l.c_col();
              if (l.lean) lstm_step<false>(x, b, ar, c + n * H, c_out, l.projected ? hraw + n * H : hr, H);
              else lstm_step(x, b, ar, c + n * H, c_out, l.projected ? hraw + n * H : hr, H);
              if (!l.lean && !gates_in_y) std::memcpy(yr + l.gates_col(), ar, sizeof(float) * GH);
              if (!l.projected) std::memcpy(yr, hr, sizeof(float) * H);
              break;
            }
            case Cell::Gru: {
              sigmoid_of_sum(x, b, ar, 2 * H);  // r, z
              // A lean output has no columns for n and hn: they go to the unused hraw and hnew.
              float* n_to = l.lean ? hraw + n * H : yr + l.gates_col() + 2 * H;
              float* hn_to = l.lean ? hnew + n * P : yr + l.hn_col();
              gru_state(x + 2 * H, b + 2 * H, ar, ar + 2 * H, bhn, n_to, hn_to, hr, H);
              if (!l.lean) std::memcpy(yr + l.gates_col(), ar, sizeof(float) * 2 * H);
              std::memcpy(yr, hr, sizeof(float) * H);
              break;
            }
          }
        });
        if (!l.projected) continue;
        span_product(span, hraw, H, H, packed_hr, P, hnew, P);
        for (int64_t n = span.lo; n < span.hi; ++n) {
          if (t >= length(lens, n)) continue;
          std::memcpy(h + n * P, hnew + n * P, sizeof(float) * P);
          std::memcpy(ys + (n * steps + t) * W, hnew + n * P, sizeof(float) * P);
        }
      }
    });
  }

  // Steps in the reverse of the forward order; dh and dc carry the gradient reaching the
  // state a step hands on. The weight gradients are left to products over all steps.
  void backward(const ExecContext& ctx, const int32_t* lens) const {
    const int64_t n_ = batch, H = l.hidden, P = l.out, GH = l.gate_width(), W = l.width(), WG = l.grad_width();
    float* dh = ctx.shared;
    float* dc = dh + n_ * P;
    float* da = dc + n_ * H;
    float* dht = da + n_ * GH;
    float* dhraw = dht + n_ * P;
    float* dhp = dhraw + n_ * H;
    float* packed_hh = ctx.shared + state_floats();
    float* packed_hr = packed_hh + packed_hh_floats();
    recurrent_gemm::pack(*ctx.pool, ctx.ptr(w_hh), GH, P, packed_hh);
    if (l.projected) recurrent_gemm::pack(*ctx.pool, ctx.ptr(w_hr), P, H, packed_hr);
    std::memset(dh, 0, sizeof(float) * n_ * P);
    std::memset(dc, 0, sizeof(float) * n_ * H);
    float* zeros = packed_hh + packed_weight_floats();
    std::memset(zeros, 0, sizeof(float) * H);
    const float* gs = ctx.ptr(seq);
    const int64_t WO = g_width;  // h's gradient alone (WO = P) leaves c's zero
    const float* ys = ctx.ptr(y);
    const float* h0s = ctx.ptr(h0);
    const float* c0s = l.cell == Cell::Lstm ? ctx.ptr(c0) : nullptr;
    float* grads = ctx.ptr(out);
    // An LSTM's and a plain RNN's d_gates are the first columns of the gradient op's rows:
    // the step's product reads them there. A GRU's (r, z, dhn) are not contiguous.
    const bool da_in_grads = l.cell != Cell::Gru;
    // Without a projection or a GRU's direct term, a step's rows need only their own dh: the
    // rows' pass sums dh and g, the product writes d(h_prev) straight into dh, and the next
    // rows' pass copies it to its column (no serial pass per step, which 2 threads waited on).
    const bool in_rows = !l.projected && l.cell != Cell::Gru;
    over_rows(*ctx.pool, n_, [&](const RowSpan& span) {
      int64_t product_t = -1;  // in_rows: the step whose d(h_prev) the last product left in dh
      auto keep_dhprev = [&](int64_t n) {
        if (product_t >= 0 && product_t < length(lens, n))
          std::memcpy(grads + (n * steps + product_t) * WG + l.dhprev_col(), dh + n * P, sizeof(float) * P);
      };
      for (int64_t s = steps - 1; s >= 0; --s) {
        const int64_t t = step_at(s);
        auto sum_dh = [&](int64_t n) {
          const bool valid = t < length(lens, n);
          const float* gr = gs + (n * steps + t) * WO;
          for (int64_t j = 0; j < P; ++j) dht[n * P + j] = valid ? dh[n * P + j] + gr[j] : 0.0f;
        };
        if (!in_rows)
          for (int64_t n = span.lo; n < span.hi; ++n) sum_dh(n);
        if (l.projected) span_product(span, dht, P, P, packed_hr, H, dhraw, H);
        each_row(span, WG, [&](int64_t n) {
          if (in_rows) {
            keep_dhprev(n);
            sum_dh(n);
          }
          const int64_t len = length(lens, n);
          float* gw = grads + (n * steps + t) * WG;
          float* dar = da_in_grads ? gw : da + n * GH;
          if (t >= len) {
            std::memset(gw, 0, sizeof(float) * WG);
            if (!da_in_grads) std::memset(dar, 0, sizeof(float) * GH);
            return;
          }
          const float* yr = ys + (n * steps + t) * W;
          const float* gr = gs + (n * steps + t) * WO;
          const int64_t prev = previous(t, len);
          const float* hprev = prev < 0 ? h0s + n * P : ys + (n * steps + prev) * W;
          std::memcpy(gw + l.hprev_col(), hprev, sizeof(float) * P);
          const float* d = dht + n * P;
          switch (l.cell) {
            case Cell::RnnTanh: case Cell::RnnRelu:
              for (int64_t j = 0; j < H; ++j) {
                const float hv = yr[j];
                const float slope = l.cell == Cell::RnnTanh ? 1.0f - hv * hv : (hv > 0.0f ? 1.0f : 0.0f);
                gw[j] = d[j] * slope;
              }
              break;
            case Cell::Lstm: {
              const float* cprev = prev < 0 ? c0s + n * H : ys + (n * steps + prev) * W + l.c_col();
              const float* dhr = l.projected ? dhraw + n * H : d;
              float* dcr = dc + n * H;
              const float* dc_out = WO == W ? gr + l.c_col() : zeros;
              lstm_backward(yr + l.gates_col(), yr + l.c_col(), cprev, dhr, dc_out, dcr, dar, H);
              std::memcpy(gw + l.dcprev_col(), dcr, sizeof(float) * H);
              if (l.projected) {
                const float* o = yr + l.gates_col() + 3 * H;
                const float* c = yr + l.c_col();
                output_of_cell(o, c, gw + l.hraw_col(), H);
                std::memcpy(gw + l.dhout_col(), d, sizeof(float) * P);
              }
              break;
            }
            case Cell::Gru:
              gru_backward(yr + l.gates_col(), yr + l.hn_col(), hprev, d, gw, gw + l.dhn_col(), H);
              std::memcpy(dar, gw, sizeof(float) * 2 * H);
              std::memcpy(dar + 2 * H, gw + l.dhn_col(), sizeof(float) * H);
              break;
          }
        });
        if (in_rows) {
          // A padded row's d_gates are zero, so its dh becomes zero: a forward sequence's padded
          // steps come before its valid ones (whose dh starts at zero), a reverse one's after them.
          span_product(span, grads + t * WG, steps * WG, GH, packed_hh, P, dh, P);
          product_t = t;
          continue;
        }
        if (da_in_grads)
          span_product(span, grads + t * WG, steps * WG, GH, packed_hh, P, dhp, P);
        else
          span_product(span, da, GH, GH, packed_hh, P, dhp, P);
        for (int64_t n = span.lo; n < span.hi; ++n) {
          if (t >= length(lens, n)) continue;
          float* gw = grads + (n * steps + t) * WG;
          const float* z = ys + (n * steps + t) * W + l.gates_col() + H;
          for (int64_t j = 0; j < P; ++j) {
            // A GRU's new state keeps z of the old one: that part bypasses w_hh.
            const float direct = l.cell == Cell::Gru ? dht[n * P + j] * z[j] : 0.0f;
            dh[n * P + j] = gw[l.dhprev_col() + j] = dhp[n * P + j] + direct;
          }
        }
      }
      if (in_rows)
        for (int64_t n = span.lo; n < span.hi; ++n) keep_dhprev(n);
    });
  }
};

// sequence_end: row n of x at step length - 1 (or 0 when reverse); its gradient puts g back.
struct SequenceEndKernel final : Kernel {
  int64_t batch = 0, steps = 0, width = 0;
  bool reverse = false, gradient = false;
  BufRef x, lengths, out;

  void run(const ExecContext& ctx) const override {
    const int32_t* lens = lengths.region == Region::None ? nullptr : ctx.iptr(lengths);
    check_lengths(lens, batch, steps, gradient ? "sequence_end_grad" : "sequence_end");
    const float* src = ctx.ptr(x);
    float* dst = ctx.ptr(out);
    if (gradient) std::memset(dst, 0, sizeof(float) * batch * steps * width);
    for (int64_t n = 0; n < batch; ++n) {
      const int64_t t = reverse ? 0 : (lens == nullptr ? steps : lens[n]) - 1;
      const int64_t at = (n * steps + t) * width;
      if (gradient) std::memcpy(dst + at, src + n * width, sizeof(float) * width);
      else std::memcpy(dst + n * width, src + at, sizeof(float) * width);
    }
  }
};

// A stateful layer's state has the batch it was built for; a plan for another batch is refused.
void check_state_rows(int64_t rows, int64_t batch, std::string_view op) {
  if (rows != batch)
    throw std::invalid_argument("[" + std::string(op) + "] the state has " + std::to_string(rows) +
                                " rows but the batch has " + std::to_string(batch) +
                                " (a stateful layer runs at the batch size it was built for)");
}

BufRef optional(const MemoryPlan& mem, const Node& n, int index) {
  return index < 0 ? BufRef{} : mem.ref[n.inputs[static_cast<size_t>(index)]];
}

}  // namespace

std::unique_ptr<Kernel> make_recurrent_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                              const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  const bool has_lengths = !n.inputs.empty() && g.node(n.inputs.back()).dtype == DType::I32;
  std::vector<size_t> ranks;
  for (int in : n.inputs) ranks.push_back(shapes[in].size());
  switch (n.op) {
    case OpKind::Recurrence: case OpKind::RecurrenceGrad: {
      auto k = std::make_unique<RecurrenceKernel>();
      k->gradient = n.op == OpKind::RecurrenceGrad;
      k->reverse = n.attrs.reverse;
      const Cell cell = cell_from_name(n.attrs.cell, op_name(n.op));
      const bool project_input = !k->gradient && n.attrs.project_input;
      const RecurrentOperands at = recurrent_operands(cell, ranks, has_lengths, k->gradient, project_input, op_name(n.op));
      const Shape& whh = shapes[n.inputs[at.w_hh]];
      k->l.cell = cell;
      k->l.gates = cell == Cell::Lstm ? 4 : cell == Cell::Gru ? 3 : 1;
      k->l.hidden = whh[0] / k->l.gates;
      k->l.out = whh[1];
      k->l.projected = at.w_hr >= 0;
      k->l.lean = n.attrs.lean;
      k->l.sequence_only = n.attrs.sequence_only;
      const Shape& seq = shapes[n.inputs[at.ids >= 0 ? at.ids : 0]];  // (N, T, ...): the ids of a table
      k->batch = seq[0];
      k->steps = seq[1];
      if (at.ids >= 0) k->table_rows = shapes[n.inputs[0]][0];
      else if (at.w_ih >= 0) k->input_width = seq[2];
      else k->g_width = seq[2];
      check_state_rows(shapes[n.inputs[at.h0]][0], k->batch, op_name(n.op));
      k->seq = read_in_place(g, n.inputs[0], mem, shapes, &k->input_ld);
      if (k->gradient) k->y = mem.ref[n.inputs[1]];
      k->h0 = optional(mem, n, at.h0);
      k->c0 = optional(mem, n, at.c0);
      k->w_hh = optional(mem, n, at.w_hh);
      k->w_hr = optional(mem, n, at.w_hr);
      k->b_hn = optional(mem, n, at.b_hn);
      k->bias = optional(mem, n, at.bias);
      k->lengths = optional(mem, n, at.lengths);
      k->ids = optional(mem, n, at.ids);
      k->w_ih = optional(mem, n, at.w_ih);
      k->out = mem.ref[id];
      return k;
    }
    case OpKind::SequenceEnd: case OpKind::SequenceEndGrad: {
      auto k = std::make_unique<SequenceEndKernel>();
      k->gradient = n.op == OpKind::SequenceEndGrad;
      k->reverse = n.attrs.reverse;
      const Shape& full = k->gradient ? shapes[id] : shapes[n.inputs[0]];
      k->batch = full[0];
      k->steps = full[1];
      k->width = full[2];
      k->x = mem.ref[n.inputs[0]];
      k->lengths = has_lengths ? mem.ref[n.inputs.back()] : BufRef{};
      if (!k->gradient) check_state_rows(shapes[id][0], k->batch, op_name(n.op));
      k->out = mem.ref[id];
      return k;
    }
    default:
      return nullptr;
  }
}

}  // namespace gometal
