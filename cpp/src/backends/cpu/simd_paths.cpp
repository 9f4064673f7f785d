#include "backends/cpu/simd_paths.h"

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace gometal {

std::string_view simd_path_name(SimdPath path) {
  switch (path) {
    case SimdPath::Avx2: return "avx2";
    case SimdPath::Avx512: return "avx512";
    default: return "portable";
  }
}

bool simd_path_available(SimdPath path) {
#ifdef GOMETAL_SIMD_X86
  switch (path) {
    case SimdPath::Avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case SimdPath::Avx512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
    default: return true;
  }
#else
  return path == SimdPath::Portable;
#endif
}

std::optional<SimdPath> choose_simd_path(std::string_view op, const char* variable, std::string_view alternative) {
  const SimdPath fastest_first[] = {SimdPath::Avx512, SimdPath::Avx2, SimdPath::Portable};
  const char* forced = std::getenv(variable);
  if (forced == nullptr || forced[0] == '\0') {
    for (SimdPath path : fastest_first)
      if (simd_path_available(path)) return path;
  }
  const std::string prefix = "[" + std::string(op) + "] " + variable;
  if (!alternative.empty() && alternative == forced) return std::nullopt;
  for (SimdPath path : fastest_first) {
    if (simd_path_name(path) != forced) continue;
    if (!simd_path_available(path))
      throw std::invalid_argument(prefix + "=" + forced + ": this CPU lacks the instructions of that path");
    return path;
  }
  const std::string names =
      alternative.empty() ? "portable, avx2 or avx512" : "portable, avx2, avx512 or " + std::string(alternative);
  throw std::invalid_argument(prefix + " must be " + names + ", got '" + forced + "'");
}

}  // namespace gometal
