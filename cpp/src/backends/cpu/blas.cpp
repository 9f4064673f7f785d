#include "backends/cpu/blas.h"

namespace gometal {

void blas_init_single_threaded() {
#if defined(GOMETAL_BLAS_SCIPY_OPENBLAS)
  scipy_openblas_set_num_threads(1);
#elif defined(GOMETAL_BLAS_OPENBLAS)
  openblas_set_num_threads(1);
#endif
}

std::string blas_info() {
#if defined(GOMETAL_BLAS_SCIPY_OPENBLAS)
  return std::string("scipy-openblas ") + scipy_openblas_get_config() + " (kernel " +
         scipy_openblas_get_corename() + ")";
#elif defined(GOMETAL_BLAS_OPENBLAS)
  return std::string("OpenBLAS ") + openblas_get_config() + " (kernel " + openblas_get_corename() + ")";
#elif defined(GOMETAL_BLAS_ACCELERATE)
  return "Accelerate";
#else
  return "cblas";
#endif
}

}  // namespace gometal
