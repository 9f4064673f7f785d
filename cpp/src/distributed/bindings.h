// The distributed part of the gometal._core module (bindings.cpp).
#pragma once

#include <pybind11/pybind11.h>

namespace gometal {

void bind_distributed(pybind11::module_& m);

}  // namespace gometal
