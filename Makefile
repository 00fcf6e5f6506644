# Thin wrapper over CMake: every target installs what is missing, configures,
# builds and runs. `make test` and `make demo` are the two commands a fresh
# machine needs. Builds here treat warnings as errors (CONVOY_WERROR=ON);
# CMAKE_FLAGS=-DCONVOY_WERROR=OFF turns that off.
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PREFIX ?= /usr/local
CMAKE_FLAGS ?=
CTEST_FLAGS ?= --output-on-failure

# The recursive makes of CMake's generator would print two "Entering/Leaving
# directory" lines per target; errors and progress still show.
MAKEFLAGS += --no-print-directory

# CMake finds nvcc itself (CMAKE_CUDA_COMPILER, CUDACXX, then PATH). When it
# is on neither, the toolkit's usual place is handed over explicitly.
NVCC ?= $(if $(CUDACXX),,$(if $(shell command -v nvcc 2>/dev/null),,$(wildcard /usr/local/cuda/bin/nvcc)))
CUDA_FLAGS := $(if $(NVCC),-DCMAKE_CUDA_COMPILER=$(NVCC))

SOURCES = git ls-files '*.c' '*.h' '*.cu' '*.cpp'

.PHONY: all deps configure build test demo bench bench-compare install test-sanitize test-tsan \
	format format-check clean

all: build

deps:
	@scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DCONVOY_WERROR=ON $(CUDA_FLAGS) $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	ctest --test-dir $(BUILD) $(CTEST_FLAGS) -j $(JOBS)

demo: build
	$(BUILD)/examples/convoy_demo bench/conv_suite.txt

bench: build
	$(BUILD)/bench/conv_bench bench/conv_suite.txt
	$(BUILD)/bench/task_overhead
	$(BUILD)/tests/pool_bench
	$(BUILD)/bench/pipeline_bench bench/conv_suite.txt
	@if [ -x $(BUILD)/bench/cudnn_compare ]; then \
	  $(BUILD)/bench/cudnn_compare bench/conv_suite.txt || [ $$? -eq 77 ]; fi

# convoy against PyTorch on the suite, interleaved in one run (bench/compare_pytorch.py);
# installs Debian's python3-torch for it. Three passes over the suite, each figure the median
# of the three, each layer measured once the CPUs are idle (up to 30 s of waiting): on a shared
# machine one pass lets a single burst of other work decide a figure.
# COMPARE_FLAGS=--rounds=1 is one quick pass.
PYTHON ?= /usr/bin/python3
COMPARE_FLAGS ?= --rounds=3 --wait-idle=30
bench-compare: build
	@CONVOY_NEED_TORCH=1 scripts/install-deps.sh
	$(PYTHON) bench/compare_pytorch.py --build $(BUILD) $(COMPARE_FLAGS)

# Headers, libconvoy.so, the CMake package and convoy.pc under PREFIX.
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# AddressSanitizer + UndefinedBehaviorSanitizer, CPU backend only (the CUDA
# backend cannot run without a GPU, and the sanitizers do not see into it).
test-sanitize: deps
	cmake -S . -B $(BUILD)-sanitize -DCMAKE_BUILD_TYPE=Debug -DCONVOY_ENABLE_CUDA=OFF \
	  -DCONVOY_SANITIZE=address,undefined -DCONVOY_BUILD_EXAMPLES=OFF -DCONVOY_WERROR=ON \
	  $(CMAKE_FLAGS)
	cmake --build $(BUILD)-sanitize -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  ctest --test-dir $(BUILD)-sanitize $(CTEST_FLAGS) -j $(JOBS)

# ThreadSanitizer over the scheduler, pool and runtime tests. OpenBLAS runs
# single-threaded here: its own threads are not instrumented.
test-tsan: deps
	cmake -S . -B $(BUILD)-tsan -DCMAKE_BUILD_TYPE=Debug -DCONVOY_ENABLE_CUDA=OFF \
	  -DCONVOY_SANITIZE=thread -DCONVOY_BUILD_EXAMPLES=OFF -DCONVOY_WERROR=ON $(CMAKE_FLAGS)
	cmake --build $(BUILD)-tsan -j $(JOBS)
	OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  ctest --test-dir $(BUILD)-tsan $(CTEST_FLAGS) -j $(JOBS) -L tsan

format:
	clang-format -i $$($(SOURCES))

# Fails, naming each file and line, when a tracked source is not formatted.
format-check:
	clang-format --dry-run --Werror $$($(SOURCES))

clean:
	rm -rf $(BUILD) $(BUILD)-sanitize $(BUILD)-tsan
