// The BLAS the build found: scipy-openblas (symbols prefixed scipy_), Accelerate, or a plain cblas.
#pragma once

#include <string>

#if defined(GOMETAL_BLAS_ACCELERATE)
#include <Accelerate/Accelerate.h>
#define GOMETAL_SGEMM cblas_sgemm
#elif defined(GOMETAL_BLAS_SCIPY_OPENBLAS)
#include <cblas.h>
#define GOMETAL_SGEMM scipy_cblas_sgemm
#else
#include <cblas.h>
#define GOMETAL_SGEMM cblas_sgemm
#endif

namespace gometal {

// Pins the BLAS to one thread: gometal splits matrix products over its own pool so
// that two thread pools never compete for the cores.
void blas_init_single_threaded();
std::string blas_info();

}  // namespace gometal
