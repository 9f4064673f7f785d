"""Loads the compiled engine with its BLAS pinned to one thread.

gometal splits matrix products over its own thread pool. OpenBLAS starts its own worker
threads when the library loads, and those spin on the same cores, so the variable is set
just while the engine's BLAS loads, then restored: NumPy (imported first, with its own BLAS
copy) and anything imported later keep the user's setting.
"""

from __future__ import annotations

import ctypes
import os
import sys

import numpy  # noqa: F401  (NumPy's BLAS loads first, under the user's settings)

_VARIABLE = "OPENBLAS_NUM_THREADS"
_saved = os.environ.get(_VARIABLE)
os.environ[_VARIABLE] = "1"
try:
    if sys.platform.startswith("linux"):
        # The module's RUNPATH finds libscipy_openblas beside it in site-packages; loading
        # it by path first also covers installs where the two packages live in different
        # site directories (a --user install over a system NumPy stack, say).
        import scipy_openblas32

        ctypes.CDLL(
            os.path.join(scipy_openblas32.get_lib_dir(), "libscipy_openblas.so"),
            mode=ctypes.RTLD_GLOBAL,
        )
    from . import _core  # noqa: F401
finally:
    if _saved is None:
        del os.environ[_VARIABLE]
    else:
        os.environ[_VARIABLE] = _saved
