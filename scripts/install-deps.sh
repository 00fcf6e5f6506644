#!/usr/bin/env bash
# Installs what convoy needs to build and test: cmake, a C compiler,
# pkg-config, OpenBLAS and CMocka; with CONVOY_NEED_FUZZER=1 (make fuzz) also
# Clang and its libFuzzer runtime (Debian ships libFuzzer apart from clang,
# in libclang-rt-dev). As root it runs apt-get itself; otherwise it prints
# the one command to run and exits 1. The CUDA toolkit is optional and never
# installed here: the build uses it when it finds it.
set -euo pipefail

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists openblas 2>/dev/null; then
  missing+=(libopenblas-dev)
fi
if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists cmocka 2>/dev/null; then
  missing+=(libcmocka-dev)
fi
if [ "${CONVOY_NEED_PYTHON:-0}" = 1 ] && ! command -v python3 >/dev/null 2>&1; then
  missing+=(python3)
fi
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
if [ "${CONVOY_NEED_FUZZER:-0}" = 1 ]; then
  if ! command -v clang >/dev/null 2>&1; then
    missing+=(clang libclang-rt-dev)
  elif ! fuzzer_links; then
    missing+=(libclang-rt-dev)
  fi
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi

echo "install-deps: missing ${missing[*]}. Run:"
echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}"
exit 1
