#!/usr/bin/env bash
# Installs what convoy needs to build and test: cmake, a C toolchain that can
# compile and link a program, make, pkg-config, OpenBLAS, oneDNN, CMocka and
# Open MPI (libopenmpi-dev for mpi.h and libmpi, openmpi-bin for mpirun);
# zlib and Fashion-MNIST (Debian's dataset-fashion-mnist) for the training
# example (`make demo`); and clang-format when CONVOY_NEED_CLANG_FORMAT=1,
# python3 when CONVOY_NEED_PYTHON=1, Debian's python3-torch when
# CONVOY_NEED_TORCH=1 (`make demo-compare` and `make bench-compare`, never
# the library), matplotlib for a python3 when CONVOY_NEED_MATPLOTLIB=1
# (scripts/trace_timeline.py, make trace-picture), Clang and its libFuzzer runtime when
# CONVOY_NEED_FUZZER=1 (make fuzz: Debian ships libFuzzer apart from clang,
# in libclang-rt-dev). As root it runs apt-get itself and shows its
# progress; otherwise it prints the one command to run and exits 1. oneDNN is
# optional to the build (CONVOY_ENABLE_ONEDNN: without it the onednn
# algorithm refuses every convolution) but installed here so the tests cover
# it. MPI is optional the same way (CONVOY_ENABLE_MPI: without it the
# collectives refuse) and installed so the multi-process tests run. The CUDA
# toolkit (and NCCL beside it) is optional and never installed here: the
# build uses it when it finds it.
set -euo pipefail

# A compiler is usable when it builds and runs a program: `command -v cc`
# also succeeds with no C library headers or no linker.
c_toolchain_works() {
  local dir status=0
  dir=$(mktemp -d)
  printf '#include <stdio.h>\nint main(void) { return puts("") < 0; }\n' >"$dir/probe.c"
  "${CC:-cc}" "$dir/probe.c" -o "$dir/probe" >/dev/null 2>&1 && "$dir/probe" >/dev/null 2>&1 ||
    status=1
  rm -rf "$dir"
  return $status
}

# A python3 that can draw: the one on PATH (which may be a virtualenv's or
# pyenv's) or the system's, which Debian's python3-matplotlib serves.
have_matplotlib() {
  local p
  for p in python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import matplotlib' >/dev/null 2>&1; then
      return 0
    fi
  done
  return 1
}

have_module() {
  command -v pkg-config >/dev/null 2>&1 && pkg-config --exists "$1" 2>/dev/null
}

# libFuzzer works when clang links a trivial fuzz target with it.
fuzzer_links() {
  local dir
  dir=$(mktemp -d) || return 1
  printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }\n' \
    >"$dir/t.c"
  clang -fsanitize=fuzzer "$dir/t.c" -o "$dir/t" >/dev/null 2>&1
  local status=$?
  rm -rf "$dir"
  return $status
}

find_missing() {
  missing=()
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  c_toolchain_works || missing+=(build-essential)
  command -v make >/dev/null 2>&1 || missing+=(make)
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  have_module openblas || missing+=(libopenblas-dev)
  have_module cmocka || missing+=(libcmocka-dev)
  # libdnnl-dev ships no .pc file: look for its header where CMake will.
  if [ ! -f /usr/include/oneapi/dnnl/dnnl.h ] && [ ! -f /usr/local/include/oneapi/dnnl/dnnl.h ]; then
    missing+=(libdnnl-dev)
  fi
  if [ ! -f /usr/include/zlib.h ] && ! have_module zlib; then
    missing+=(zlib1g-dev)
  fi
  if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    missing+=(dataset-fashion-mnist)
  fi
  # Debian's python3-torch lives in Debian's python3, which another python3 on PATH may hide.
  if [ "${CONVOY_NEED_TORCH:-0}" = 1 ] && ! /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then
    missing+=(python3-torch)
  fi
  # CMake's FindMPI starts from the mpicc wrapper; mpirun starts the tests' ranks.
  if ! command -v mpicc >/dev/null 2>&1 || ! have_module ompi-c; then
    missing+=(libopenmpi-dev)
  fi
  command -v mpirun >/dev/null 2>&1 || missing+=(openmpi-bin)
  if [ "${CONVOY_NEED_CLANG_FORMAT:-0}" = 1 ] && ! command -v clang-format >/dev/null 2>&1; then
    missing+=(clang-format)
  fi
  if [ "${CONVOY_NEED_PYTHON:-0}" = 1 ] && ! command -v python3 >/dev/null 2>&1; then
    missing+=(python3)
  fi
  if [ "${CONVOY_NEED_FUZZER:-0}" = 1 ]; then
    if ! command -v clang >/dev/null 2>&1; then
      missing+=(clang libclang-rt-dev)
    elif ! fuzzer_links; then
      missing+=(libclang-rt-dev)
    fi
  fi
  if [ "${CONVOY_NEED_MATPLOTLIB:-0}" = 1 ] && ! have_matplotlib; then
    missing+=(python3-matplotlib)
  fi
}

find_missing
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
  find_missing
  if [ ${#missing[@]} -ne 0 ]; then
    echo "install-deps: still missing after apt-get: ${missing[*]}" >&2
    if ! c_toolchain_works; then
      echo "install-deps: ${CC:-cc} cannot compile, link and run a C program" >&2
    fi
    exit 1
  fi
  echo "install-deps: done"
  exit 0
fi

echo "install-deps: missing ${missing[*]}. Run:"
echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}"
exit 1
