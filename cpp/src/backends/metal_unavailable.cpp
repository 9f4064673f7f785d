// Builds without Metal (every non-Apple platform) get a clear error instead of a backend.
#include <stdexcept>

#include "backends/backend.h"

namespace gometal {

std::unique_ptr<Backend> make_metal_backend(const BackendOptions&) {
  throw std::runtime_error(
      "[engine] the Metal backend is not built into this gometal: it needs macOS on Apple Silicon "
      "and the CMake option GOMETAL_METAL=ON");
}

bool metal_available() { return false; }

}  // namespace gometal
