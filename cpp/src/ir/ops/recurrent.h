// The recurrence ops' cells and the column layouts of their packed outputs, shared by the
// shape rules (ir/ops/recurrent.cpp) and the CPU kernels (backends/cpu/recurrent.cpp).
//
// recurrence(xp, h0, [c0], w_hh, [w_hr], [b_hn], [bias], [lengths]) runs one layer and direction:
//   xp (N, T, G*H): the input projection of every step, h0 (N, P), c0 (N, H) (LSTM),
//   w_hh (G*H, P), w_hr (P, H) (LSTM with a projection, P < H), b_hn (H,) (GRU),
//   bias (G*H,) (optional: added to xp on every step, so that no pass over xp adds it; a
//   GRU's b_hn stays apart), lengths int32 (N,) (optional, always last).
// recurrence(table, ids, h0, ...) takes the input projection as rows of a table (V, G*H)
// picked by int32 ids (N, T) instead: an embedding lookup's projection, read in place.
// Its output (N, T, W) packs per step what the layer reads and what the backward pass needs
// (with `lean`, for inference, only what the layer reads: h, and an LSTM's c; with
// `sequence_only` too, h alone, for a layer whose caller reads no cell state); every column
// of a padded step (t >= length) is zero.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gometal/ir.h"

namespace gometal {

enum class Cell : uint8_t { RnnTanh, RnnRelu, Lstm, Gru };

// The cell named by the `cell` attribute; throws std::invalid_argument naming `op` otherwise.
Cell cell_from_name(const std::string& name, std::string_view op);

struct RecurrentLayout {
  Cell cell = Cell::RnnTanh;
  int64_t gates = 1;    // G: 1 (RNN), 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n)
  int64_t hidden = 0;   // H
  int64_t out = 0;      // P: H, or the LSTM's projection size
  bool projected = false;
  bool lean = false;  // inference: only the columns a layer reads, no saved gates
  bool sequence_only = false;  // lean: h alone, an LSTM's cell states stay inside the kernel

  int64_t gate_width() const { return gates * hidden; }
  // Forward output columns: h (P); LSTM: then c (H) and the gates i, f, g, o (4H);
  // GRU: then the gates r, z, n (3H) and hn = W_hn h + b_hn (H).
  int64_t c_col() const { return out; }
  int64_t gates_col() const { return cell == Cell::Lstm ? out + hidden : out; }
  int64_t hn_col() const { return out + 3 * hidden; }
  int64_t width() const {
    if (lean) return cell == Cell::Lstm && !sequence_only ? out + hidden : out;
    switch (cell) {
      case Cell::Lstm: return out + 5 * hidden;
      case Cell::Gru: return 5 * hidden;
      default: return hidden;
    }
  }
  // Gradient op columns: d(xp) (G*H); GRU: then d(W_hn h + b_hn) (H); then the state each
  // step read (P) and the gradient it sends to that state (P); LSTM: then the cell state's
  // gradient (H); a projection: then the step's output gradient (P) and unprojected h (H).
  // W_hh's gradient is sum over steps of [d(xp) (GRU: r, z parts and dhn)]^T h_prev.
  int64_t dhn_col() const { return gate_width(); }
  int64_t hprev_col() const { return gate_width() + (cell == Cell::Gru ? hidden : 0); }
  int64_t dhprev_col() const { return hprev_col() + out; }
  int64_t dcprev_col() const { return dhprev_col() + out; }
  int64_t dhout_col() const { return dcprev_col() + hidden; }
  int64_t hraw_col() const { return dhout_col() + out; }
  int64_t grad_width() const {
    if (cell != Cell::Lstm) return dhprev_col() + out;
    return projected ? hraw_col() + hidden : dhout_col();
  }
};

// Where each operand sits in a recurrence node's inputs (-1: absent). The forward op's
// operands start at 0; recurrence_grad's at 2, after (g, y), and it takes no xp or b_hn.
struct RecurrentOperands {
  int xp = -1, h0 = -1, c0 = -1, w_hh = -1, w_hr = -1, b_hn = -1, bias = -1, lengths = -1;
  int ids = -1;  // xp is a table (V, G*H) whose rows these int32 (N, T) ids pick
  int w_ih = -1;  // project_input: xp is the sequence x (N, T, I), projected by w_ih (G*H, I)
};

// Reads the operand positions from the inputs' ranks (w_hr is a matrix, bias a vector, a
// table of projected rows a matrix where xp is a sequence);
// throws std::invalid_argument naming `op` and the operands it takes when they fit none.
RecurrentOperands recurrent_operands(Cell cell, const std::vector<size_t>& ranks, bool has_lengths, bool gradient,
                                     bool project_input, std::string_view op);

}  // namespace gometal
