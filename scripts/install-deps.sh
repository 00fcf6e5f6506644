#!/usr/bin/env bash
# Installs what convoy needs to build and test: cmake, a C toolchain that can
# compile and link a program, make, pkg-config, OpenBLAS, oneDNN and CMocka
# (and clang-format when CONVOY_NEED_CLANG_FORMAT=1, python3 when
# CONVOY_NEED_PYTHON=1, Debian's PyTorch for bench/compare_pytorch.py when
# CONVOY_NEED_TORCH=1). As root it runs apt-get itself and shows its
# progress; otherwise it prints the one command to run and exits 1. oneDNN is
# optional to the build (CONVOY_ENABLE_ONEDNN: without it the onednn
# algorithm refuses every convolution) but installed here so the tests cover
# it. The CUDA
# toolkit is optional and never installed here: the build uses it when it
# finds it.
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

have_module() {
  command -v pkg-config >/dev/null 2>&1 && pkg-config --exists "$1" 2>/dev/null
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
  if [ "${CONVOY_NEED_CLANG_FORMAT:-0}" = 1 ] && ! command -v clang-format >/dev/null 2>&1; then
    missing+=(clang-format)
  fi
  if [ "${CONVOY_NEED_PYTHON:-0}" = 1 ] && ! command -v python3 >/dev/null 2>&1; then
    missing+=(python3)
  fi
  # The system interpreter, where Debian's python3-torch installs (a python3 earlier on PATH,
  # from pyenv or a virtual environment, does not see it).
  if [ "${CONVOY_NEED_TORCH:-0}" = 1 ] && ! /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then
    missing+=(python3-torch)
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
