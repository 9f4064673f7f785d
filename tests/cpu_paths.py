"""Which of the engine's run-time instruction-set paths this CPU can run, for the tests that
force each path through its environment variable (GOMETAL_CONV_KERNEL, GOMETAL_GEMM_SMALL_KERNEL,
GOMETAL_INT8_KERNEL)."""

from __future__ import annotations

import platform

# x86 builds hold the kernels written with x86 vector types (their variables are read only there).
X86 = platform.machine().lower() in ("x86_64", "amd64")

# The /proc/cpuinfo flags the float kernels' vector paths need (cpp/src/backends/cpu/simd_paths.cpp).
VECTOR_PATH_FLAGS = {"portable": set(), "avx2": {"avx2", "fma"}, "avx512": {"avx512f", "fma"}}


def cpu_flags() -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def vector_path_available(path: str) -> bool:
    """Whether this CPU runs a float kernel's vector path ("portable", "avx2", "avx512")."""
    if path == "portable":
        return True
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return VECTOR_PATH_FLAGS[path] <= cpu_flags()
