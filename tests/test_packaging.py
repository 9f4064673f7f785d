"""The installed extension loads its BLAS without LD_LIBRARY_PATH, from any directory."""

import os
import shutil
import subprocess
import sys

import pytest
import threadpoolctl

import gometal  # noqa: F401  (loads the engine)
from gometal import _core


def test_import_needs_no_library_path(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH")}
    code = "import gometal, gometal._core as c; print(c.blas_info())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip(), "blas_info() is empty"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF RUNPATH is Linux-specific")
def test_extension_runpath_is_relative_to_the_module():
    readelf = shutil.which("readelf")
    assert readelf, "readelf (binutils) is part of the build toolchain this package needs"
    result = subprocess.run(
        [readelf, "-d", _core.__file__], check=True, capture_output=True, text=True
    )
    dynamic = result.stdout
    runpath = [line for line in dynamic.splitlines() if "RUNPATH" in line or "RPATH" in line]
    assert runpath and "$ORIGIN" in runpath[0], dynamic


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OpenBLAS is the Linux BLAS")
def test_engine_blas_runs_single_threaded():
    # gometal splits matrix products over its own pool: its BLAS must not run a second pool.
    engine_blas = [
        info for info in threadpoolctl.threadpool_info() if "scipy_openblas32" in info["filepath"]
    ]
    assert engine_blas, "the engine's libscipy_openblas is not loaded"
    assert all(info["num_threads"] == 1 for info in engine_blas), engine_blas
