// Weights a convolution kernel packed, kept per thread across calls: a sample-tiled run calls a
// kernel once per image, and comparing the weights with a copy (4 bytes a weight, read in
// order) costs a fraction of transposing them again (a scattered store per weight).
#pragma once

#include <cstdint>

namespace gometal {

// What a packing depends on besides the weights' values: the layout's name, the weights'
// shape as the layout reads it, and the vector width.
struct PackedWeightKey {
  const char* layout;  // names the packing function (a string literal)
  int64_t rows, columns, lanes;
};

// The packed form of the `floats` weights at `source`, from this thread's cache when a copy of
// exactly these bytes was packed with the same key, else packed now by pack(source, packed)
// into `packed_floats` floats and cached (16 entries or 64 MB per thread at most, the oldest
// dropped first). The pointer stays valid until this thread's next call.
using PackWeights = void (*)(const PackedWeightKey& key, const float* source, float* packed);
const float* cached_packed_weights(const PackedWeightKey& key, const float* source, int64_t floats,
                                   int64_t packed_floats, PackWeights pack);

}  // namespace gometal
