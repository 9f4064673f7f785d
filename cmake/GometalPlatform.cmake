# Platform decisions for the gometal build: which CPU the build targets, whether the Metal
# backend is built (and so which backend sources go in), and which CPU-tuning flag to try.
#
# Every function takes the platform facts as arguments instead of reading APPLE,
# CMAKE_SYSTEM_PROCESSOR or the compiler id itself, so that tests/test_cmake_config.py can call
# them in script mode (cmake -P) with the facts of a Mac on a Linux machine. Only
# gometal_add_cpu_tuning() needs a real project (it asks the compiler which flag it accepts).

include_guard(GLOBAL)

# gometal_target_processor(<out> SYSTEM_PROCESSOR <name> [OSX_ARCHITECTURES <arch>...])
#
# Sets <out> to the CPU the build targets, spelled "arm64" or "x86_64" for those two (CMake
# reports aarch64/arm64/ARM64 and x86_64/AMD64 depending on the system), the lower-cased name
# for any other CPU, or "multiple" for a macOS build of several architectures at once.
# OSX_ARCHITECTURES (CMAKE_OSX_ARCHITECTURES) wins over SYSTEM_PROCESSOR: a Mac can build for
# an architecture other than its own.
function(gometal_target_processor out)
  # Not PARSE_ARGV: that form keeps a quoted "arm64;x86_64" as one escaped value.
  cmake_parse_arguments(ARG "" "SYSTEM_PROCESSOR" "OSX_ARCHITECTURES" ${ARGN})
  set(processor "${ARG_SYSTEM_PROCESSOR}")
  list(LENGTH ARG_OSX_ARCHITECTURES arch_count)
  if(arch_count GREATER 1)
    set(${out} "multiple" PARENT_SCOPE)
    return()
  elseif(arch_count EQUAL 1)
    set(processor "${ARG_OSX_ARCHITECTURES}")
  endif()
  string(TOLOWER "${processor}" processor)
  if(processor MATCHES "^(arm64|aarch64)$")
    set(processor "arm64")
  elseif(processor MATCHES "^(x86_64|amd64|x64)$")
    set(processor "x86_64")
  endif()
  set(${out} "${processor}" PARENT_SCOPE)
endfunction()

# gometal_metal_sources_in(<out> <dir>)
#
# Sets <out> to the Objective-C++ sources of the Metal backend found in <dir> (maybe none).
function(gometal_metal_sources_in out dir)
  file(GLOB sources "${dir}/*.mm")
  list(SORT sources)
  set(${out} "${sources}" PARENT_SCOPE)
endfunction()

# gometal_metal_default(<out> IS_APPLE <bool> PROCESSOR <cpu> METAL_SOURCE_DIR <dir>)
#
# Sets <out> to ON where the Metal backend can be built by default: macOS on arm64 with the
# backend's .mm sources present in METAL_SOURCE_DIR. Everywhere else it is OFF and the stub
# (metal_unavailable.cpp) is built, so that the library always links.
function(gometal_metal_default out)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "" "IS_APPLE;PROCESSOR;METAL_SOURCE_DIR" "")
  set(default OFF)
  if(ARG_IS_APPLE AND ARG_PROCESSOR STREQUAL "arm64")
    gometal_metal_sources_in(metal_sources "${ARG_METAL_SOURCE_DIR}")
    if(metal_sources)
      set(default ON)
    endif()
  endif()
  set(${out} ${default} PARENT_SCOPE)
endfunction()

# gometal_backend_sources(<out> METAL <bool> IS_APPLE <bool> PROCESSOR <cpu>
#                         METAL_SOURCE_DIR <dir> STUB <file>)
#
# Sets <out> to the sources that define make_metal_backend() and metal_available(): the .mm
# files of METAL_SOURCE_DIR when METAL is ON, the STUB file otherwise. METAL=ON where it
# cannot be built (not macOS on arm64, or no .mm sources) stops the configure with an error
# that says why, rather than a link error later.
function(gometal_backend_sources out)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "" "METAL;IS_APPLE;PROCESSOR;METAL_SOURCE_DIR;STUB" "")
  if(NOT ARG_METAL)
    set(${out} "${ARG_STUB}" PARENT_SCOPE)
    return()
  endif()
  if(NOT ARG_IS_APPLE OR NOT ARG_PROCESSOR STREQUAL "arm64")
    message(FATAL_ERROR
      "GOMETAL_METAL=ON needs macOS on Apple Silicon (arm64), but this build targets "
      "${CMAKE_SYSTEM_NAME} on '${ARG_PROCESSOR}': configure with -DGOMETAL_METAL=OFF")
  endif()
  gometal_metal_sources_in(metal_sources "${ARG_METAL_SOURCE_DIR}")
  if(NOT metal_sources)
    message(FATAL_ERROR
      "GOMETAL_METAL=ON, but the Metal backend has no sources: expected *.mm files in "
      "${ARG_METAL_SOURCE_DIR}, found none. Configure with -DGOMETAL_METAL=OFF to build the "
      "CPU backend alone")
  endif()
  set(${out} "${metal_sources}" PARENT_SCOPE)
endfunction()

# gometal_native_arch_flag(<out> NATIVE <bool> PROCESSOR <cpu> COMPILER_ID <id>
#                          [CROSSCOMPILING <bool>])
#
# Sets <out> to the flag that tunes code for the building machine's CPU, or to "" for none.
# Compilers spell it differently per CPU: x86_64 takes -march=native (GCC, Clang, AppleClang,
# IntelLLVM); arm64 takes -mcpu=native (GCC, Clang, AppleClang), and Apple clang on arm64
# rejects -march=native. A portable build (NATIVE OFF, as for wheels), a cross build (the
# building CPU is not the target) and a build for several architectures take none.
function(gometal_native_arch_flag out)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "" "NATIVE;PROCESSOR;COMPILER_ID;CROSSCOMPILING" "")
  set(flag "")
  if(ARG_NATIVE AND NOT ARG_CROSSCOMPILING)
    if(ARG_PROCESSOR STREQUAL "x86_64" AND ARG_COMPILER_ID MATCHES "^(GNU|Clang|AppleClang|IntelLLVM)$")
      set(flag "-march=native")
    elseif(ARG_PROCESSOR STREQUAL "arm64" AND ARG_COMPILER_ID MATCHES "^(GNU|Clang|AppleClang)$")
      set(flag "-mcpu=native")
    endif()
  endif()
  set(${out} "${flag}" PARENT_SCOPE)
endfunction()

# gometal_add_cpu_tuning(<target> NATIVE <bool> PROCESSOR <cpu>)
#
# Adds gometal_native_arch_flag()'s flag to <target> if the compiler accepts it (checked with
# check_cxx_compiler_flag, not assumed), and reports the choice. Needs a project with CXX.
function(gometal_add_cpu_tuning target)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "" "NATIVE;PROCESSOR" "")
  set(crosscompiling OFF)
  if(CMAKE_CROSSCOMPILING)
    set(crosscompiling ON)
  endif()
  gometal_native_arch_flag(flag
    NATIVE "${ARG_NATIVE}" PROCESSOR "${ARG_PROCESSOR}"
    COMPILER_ID "${CMAKE_CXX_COMPILER_ID}" CROSSCOMPILING ${crosscompiling})
  if(flag)
    include(CheckCXXCompilerFlag)
    string(MAKE_C_IDENTIFIER "GOMETAL_CXX_ACCEPTS${flag}" accepted_var)
    check_cxx_compiler_flag("${flag}" ${accepted_var})
    if(NOT ${accepted_var})
      message(STATUS "gometal: ${CMAKE_CXX_COMPILER_ID} rejects ${flag}: no CPU tuning")
      set(flag "")
    endif()
  endif()
  if(flag)
    target_compile_options(${target} PRIVATE ${flag})
    message(STATUS "gometal: CPU tuning: ${flag}")
  else()
    message(STATUS "gometal: CPU tuning: none (portable)")
  endif()
endfunction()
