"""The CMake configuration picks the Metal backend, its stub and the CPU-tuning flag per platform.

There is no Mac here, so the platform decisions (cmake/GometalPlatform.cmake) are called in
CMake's script mode (`cmake -P`) with a Mac's facts passed in: macOS, arm64, AppleClang, and a
folder with or without Metal sources. A real configure-only run of CMakeLists.txt checks the
platform this test runs on. What is expected comes from how each compiler spells its flags
(x86_64: -march=native; arm64: -mcpu=native, which Apple clang needs), not from earlier output.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PLATFORM_MODULE = REPO_ROOT / "cmake" / "GometalPlatform.cmake"
STUB_SOURCE = REPO_ROOT / "cpp" / "src" / "backends" / "metal_unavailable.cpp"
CMAKE = shutil.which("cmake")


def _cmake() -> str:
    assert CMAKE, "cmake is needed to build gometal and must be on PATH"
    return CMAKE


def _run_platform_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    """Runs `body` in CMake script mode after including the platform module."""
    script = tmp_path / "platform_check.cmake"
    script.write_text(f'include("{PLATFORM_MODULE.as_posix()}")\n{body}\n')
    return subprocess.run(
        [_cmake(), "-P", str(script)], capture_output=True, text=True, timeout=60, check=False
    )


def _results(completed: subprocess.CompletedProcess) -> dict[str, str]:
    """The `RESULT name=value` lines a platform script printed, as a dict."""
    assert completed.returncode == 0, completed.stdout + completed.stderr
    found = {}
    for line in (completed.stdout + completed.stderr).splitlines():
        _, marker, assignment = line.partition("RESULT ")
        if marker:
            name, _, value = assignment.partition("=")
            found[name] = value
    return found


def _metal_decision(
    tmp_path: Path,
    *,
    is_apple: bool,
    system_processor: str,
    metal_dir: Path,
    metal: str | None = None,
    osx_architectures: str = "",
) -> subprocess.CompletedProcess:
    """Decides the target CPU, GOMETAL_METAL's default and the backend sources from the facts.

    `metal` forces GOMETAL_METAL (ON/OFF) as a user would; None takes the default.
    """
    apple = "ON" if is_apple else "OFF"
    metal_value = metal if metal is not None else "${metal_default}"
    body = f"""
gometal_target_processor(processor SYSTEM_PROCESSOR "{system_processor}"
                         OSX_ARCHITECTURES {osx_architectures})
gometal_metal_default(metal_default IS_APPLE {apple} PROCESSOR "${{processor}}"
                      METAL_SOURCE_DIR "{metal_dir.as_posix()}")
gometal_backend_sources(sources METAL {metal_value} IS_APPLE {apple}
                        PROCESSOR "${{processor}}" METAL_SOURCE_DIR "{metal_dir.as_posix()}"
                        STUB "{STUB_SOURCE.as_posix()}")
message(STATUS "RESULT processor=${{processor}}")
message(STATUS "RESULT metal_default=${{metal_default}}")
message(STATUS "RESULT sources=${{sources}}")
"""
    return _run_platform_script(tmp_path, body)


@pytest.fixture
def empty_metal_dir(tmp_path: Path) -> Path:
    """A Metal source folder with no .mm files, as in the repository today."""
    folder = tmp_path / "metal"
    folder.mkdir()
    (folder / "README.md").write_text("not a source\n")
    return folder


@pytest.fixture
def metal_dir_with_source(tmp_path: Path) -> Path:
    """A Metal source folder holding one (fake) Objective-C++ source."""
    folder = tmp_path / "metal_with_source"
    folder.mkdir()
    (folder / "metal_backend.mm").write_text("// stands in for the Metal backend\n")
    return folder


@pytest.mark.parametrize("system_processor", ["arm64", "aarch64"])
def test_apple_arm64_without_metal_sources_builds_the_stub(
    tmp_path, empty_metal_dir, system_processor
):
    result = _results(
        _metal_decision(
            tmp_path, is_apple=True, system_processor=system_processor, metal_dir=empty_metal_dir
        )
    )
    assert result["processor"] == "arm64"
    assert result["metal_default"] == "OFF"
    assert result["sources"].split(";") == [STUB_SOURCE.as_posix()]


def test_apple_arm64_with_metal_sources_defaults_metal_on(tmp_path, metal_dir_with_source):
    result = _results(
        _metal_decision(
            tmp_path, is_apple=True, system_processor="arm64", metal_dir=metal_dir_with_source
        )
    )
    assert result["metal_default"] == "ON"
    sources = result["sources"].split(";")
    assert sources == [(metal_dir_with_source / "metal_backend.mm").as_posix()]
    assert STUB_SOURCE.as_posix() not in sources


def test_metal_turned_off_by_hand_builds_the_stub_even_with_sources(
    tmp_path, metal_dir_with_source
):
    result = _results(
        _metal_decision(
            tmp_path,
            is_apple=True,
            system_processor="arm64",
            metal_dir=metal_dir_with_source,
            metal="OFF",
        )
    )
    assert result["sources"].split(";") == [STUB_SOURCE.as_posix()]


@pytest.mark.parametrize(
    ("is_apple", "system_processor", "osx_architectures"),
    [
        (True, "x86_64", ""),  # an Intel Mac
        (False, "aarch64", ""),  # Linux on arm64
        (False, "x86_64", ""),
        (True, "arm64", "x86_64"),  # an Apple Silicon Mac building for Intel
        (True, "arm64", '"arm64;x86_64"'),  # a universal2 build
    ],
)
def test_metal_defaults_off_away_from_macos_arm64(
    tmp_path, metal_dir_with_source, is_apple, system_processor, osx_architectures
):
    result = _results(
        _metal_decision(
            tmp_path,
            is_apple=is_apple,
            system_processor=system_processor,
            metal_dir=metal_dir_with_source,
            osx_architectures=osx_architectures,
        )
    )
    assert result["metal_default"] == "OFF"
    assert result["sources"].split(";") == [STUB_SOURCE.as_posix()]


def test_metal_forced_on_without_sources_is_a_configure_error(tmp_path, empty_metal_dir):
    completed = _metal_decision(
        tmp_path, is_apple=True, system_processor="arm64", metal_dir=empty_metal_dir, metal="ON"
    )
    assert completed.returncode != 0
    message = " ".join(completed.stderr.split())
    assert "GOMETAL_METAL=ON" in message
    assert "no sources" in message and empty_metal_dir.as_posix() in message
    assert "-DGOMETAL_METAL=OFF" in message


def test_metal_forced_on_off_apple_is_a_configure_error(tmp_path, metal_dir_with_source):
    completed = _metal_decision(
        tmp_path,
        is_apple=False,
        system_processor="x86_64",
        metal_dir=metal_dir_with_source,
        metal="ON",
    )
    assert completed.returncode != 0
    message = " ".join(completed.stderr.split())
    assert "needs macOS on Apple Silicon" in message and "-DGOMETAL_METAL=OFF" in message


@pytest.mark.parametrize(
    ("system_processor", "osx_architectures", "expected"),
    [
        ("aarch64", "", "arm64"),
        ("ARM64", "", "arm64"),
        ("AMD64", "", "x86_64"),
        ("x86_64", "", "x86_64"),
        ("arm64", "x86_64", "x86_64"),
        ("x86_64", '"arm64;x86_64"', "multiple"),
        ("ppc64le", "", "ppc64le"),
    ],
)
def test_target_processor_names_the_cpu_built_for(
    tmp_path, system_processor, osx_architectures, expected
):
    body = f"""
gometal_target_processor(processor SYSTEM_PROCESSOR "{system_processor}"
                         OSX_ARCHITECTURES {osx_architectures})
message(STATUS "RESULT processor=${{processor}}")
"""
    assert _results(_run_platform_script(tmp_path, body))["processor"] == expected


@pytest.mark.parametrize(
    ("native", "processor", "compiler_id", "crosscompiling", "expected"),
    [
        ("ON", "arm64", "AppleClang", "OFF", "-mcpu=native"),
        ("ON", "arm64", "Clang", "OFF", "-mcpu=native"),
        ("ON", "arm64", "GNU", "OFF", "-mcpu=native"),
        ("ON", "x86_64", "GNU", "OFF", "-march=native"),
        ("ON", "x86_64", "Clang", "OFF", "-march=native"),
        ("ON", "x86_64", "AppleClang", "OFF", "-march=native"),
        ("OFF", "x86_64", "GNU", "OFF", ""),  # portable (wheels)
        ("OFF", "arm64", "AppleClang", "OFF", ""),
        ("ON", "x86_64", "GNU", "ON", ""),  # the building CPU is not the target
        ("ON", "multiple", "AppleClang", "OFF", ""),  # one flag cannot suit two CPUs
        ("ON", "x86_64", "MSVC", "OFF", ""),
    ],
)
def test_native_arch_flag_is_spelled_for_the_compiler_and_cpu(
    tmp_path, native, processor, compiler_id, crosscompiling, expected
):
    body = f"""
gometal_native_arch_flag(flag NATIVE {native} PROCESSOR "{processor}"
                         COMPILER_ID "{compiler_id}" CROSSCOMPILING {crosscompiling})
message(STATUS "RESULT flag=${{flag}}")
"""
    flag = _results(_run_platform_script(tmp_path, body))["flag"]
    assert flag == expected
    if processor == "arm64":
        assert "-march=native" not in flag  # Apple clang on arm64 rejects it


# ---- a real configure of CMakeLists.txt on this machine -------------------------------------


def _configure(build_dir: Path, *options: str) -> subprocess.CompletedProcess:
    """Runs a configure-only cmake of the repository into `build_dir`."""
    command = [_cmake(), "-S", str(REPO_ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release"]
    if shutil.which("ninja"):
        command += ["-G", "Ninja"]
    # The configure finds scipy-openblas through this interpreter's packages.
    command += [f"-DPython_EXECUTABLE={sys.executable}", *options]
    env = {k: v for k, v in os.environ.items() if k not in ("CMAKE_GENERATOR", "CMAKE_ARGS")}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, env=env
    )


def _compile_flag_files(build_dir: Path) -> str:
    """The generated files that hold the compile lines (Ninja or Makefiles)."""
    files = [build_dir / "build.ninja", *build_dir.rglob("flags.make")]
    return "\n".join(path.read_text() for path in files if path.is_file())


def _this_machines_native_flag() -> str:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "-march=native"
    if machine in ("arm64", "aarch64"):
        return "-mcpu=native"
    raise AssertionError(f"no native flag is known for this machine's CPU {machine!r}")


def test_configure_portable_takes_no_arch_flag_and_builds_the_stub(tmp_path):
    completed = _configure(tmp_path / "build", "-DGOMETAL_NATIVE=OFF")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "gometal: CPU tuning: none (portable)" in completed.stdout
    assert "gometal: Metal backend OFF" in completed.stdout
    assert STUB_SOURCE.as_posix() in completed.stdout
    flags = _compile_flag_files(tmp_path / "build")
    assert "-fno-math-errno" in flags  # the compile lines were found
    assert "-march=native" not in flags and "-mcpu=native" not in flags


def test_configure_native_takes_this_cpus_flag(tmp_path):
    expected = _this_machines_native_flag()
    completed = _configure(tmp_path / "build", "-DGOMETAL_NATIVE=ON")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"gometal: CPU tuning: {expected}" in completed.stdout
    assert expected in _compile_flag_files(tmp_path / "build")


def test_configure_with_metal_forced_on_fails_clearly(tmp_path):
    completed = _configure(tmp_path / "build", "-DGOMETAL_METAL=ON")
    assert completed.returncode != 0
    message = " ".join(completed.stderr.split())
    assert "GOMETAL_METAL=ON" in message and "-DGOMETAL_METAL=OFF" in message
    if sys.platform == "darwin" and platform.machine() == "arm64":
        assert "no sources" in message  # the repository has no Metal backend sources yet
    else:
        assert "needs macOS on Apple Silicon" in message


def _compile_in(entry: dict, out_dir: Path) -> subprocess.CompletedProcess:
    """Runs one compile_commands.json entry, writing its object and depfile under `out_dir`."""
    arguments = entry.get("arguments") or shlex.split(entry["command"])
    for index, argument in enumerate(arguments[:-1]):
        if argument in ("-o", "-MF"):
            arguments[index + 1] = str(out_dir / (Path(entry["file"]).name + argument))
    return subprocess.run(
        arguments, cwd=entry["directory"], capture_output=True, text=True, timeout=120, check=False
    )


def test_portable_build_compiles_the_vector_kernels(tmp_path):
    # Without -march=native an x86 compiler has no 256-bit registers: the kernels written with
    # vector types (vec8.h, simd_paths.h; included by the file or its own header) must still
    # compile, as they do for wheels and on arm64.
    build_dir = tmp_path / "build"
    completed = _configure(build_dir, "-DGOMETAL_NATIVE=OFF", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    entries = json.loads((build_dir / "compile_commands.json").read_text())

    def uses_vectors(source: Path, seen: set[Path]) -> bool:
        # Through the project's own includes (cpp/src/...), followed once each.
        seen.add(source)
        for included in re.findall(r'#include "([^"]+)"', source.read_text()):
            if Path(included).name in ("vec8.h", "simd_paths.h"):
                return True
            header = REPO_ROOT / "cpp" / "src" / included
            if header.exists() and header not in seen and uses_vectors(header, seen):
                return True
        return False

    vector_kernels = [e for e in entries if uses_vectors(Path(e["file"]), set())]
    names = {Path(e["file"]).name for e in vector_kernels}
    assert {"conv_direct.cpp", "conv_simd.cpp", "gemm_small.cpp", "pool.cpp"} <= names, names
    for entry in vector_kernels:
        compiled = _compile_in(entry, tmp_path)
        assert compiled.returncode == 0, f"{entry['file']}:\n{compiled.stderr}"
