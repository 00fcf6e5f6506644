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

.PHONY: all deps configure build test demo demo-compare bench bench-compare install \
	test-sanitize test-tsan format format-check fuzz trace-picture clean

all: build

deps:
	@scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DCONVOY_WERROR=ON $(CUDA_FLAGS) $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	ctest --test-dir $(BUILD) $(CTEST_FLAGS) -j $(JOBS)

# Trains the Fashion-MNIST network (examples/train_fashion_mnist.c): 3 epochs, about a minute
# on a 2-core CPU. DEMO_FLAGS adds flags (--streams 0, --deterministic, ...; see --help).
DEMO_FLAGS ?=
demo: build
	$(BUILD)/examples/train_fashion_mnist $(DEMO_FLAGS)

# The same training side by side with PyTorch (examples/train_fashion_mnist_reference.py): the
# C program exports its initial weights and logs every step's loss, the reference starts from
# those weights, takes the same batches in the same order and prints both. Both compute with 2
# threads: PyTorch's torch.set_num_threads(2), convoy's one stream of 2-thread tasks (oneDNN
# then splits its sums the same way, so the first steps agree closely). Installs Debian's
# python3-torch first; nothing else depends on it. Debian's own python3 runs it.
COMPARE_FLAGS ?= --epochs 3 --batch 128 --lr 0.05 --momentum 0.9 --weight-decay 0.0005 --seed 1
demo-compare: build
	@CONVOY_NEED_TORCH=1 scripts/install-deps.sh
	@mkdir -p $(BUILD)/compare
	$(BUILD)/examples/train_fashion_mnist $(COMPARE_FLAGS) --streams 1 \
	  --export-weights $(BUILD)/compare/initial_weights.bin --loss-log $(BUILD)/compare/convoy_log.txt
	/usr/bin/python3 examples/train_fashion_mnist_reference.py $(COMPARE_FLAGS) --threads 2 \
	  --weights $(BUILD)/compare/initial_weights.bin --convoy-log $(BUILD)/compare/convoy_log.txt

bench: build
	$(BUILD)/examples/convoy_demo bench/conv_suite.txt
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
# BENCH_COMPARE_FLAGS=--rounds=1 is one quick pass.
PYTHON ?= /usr/bin/python3
BENCH_COMPARE_FLAGS ?= --rounds=3 --wait-idle=30
bench-compare: build
	@CONVOY_NEED_TORCH=1 scripts/install-deps.sh
	$(PYTHON) bench/compare_pytorch.py --build $(BUILD) $(BENCH_COMPARE_FLAGS)

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
# single-threaded here: its own threads are not instrumented. The runtime
# sets OpenBLAS's thread count itself (CONVOY_BLAS_THREADS, default all
# cores), so OPENBLAS_NUM_THREADS alone does not keep it at one.
test-tsan: deps
	cmake -S . -B $(BUILD)-tsan -DCMAKE_BUILD_TYPE=Debug -DCONVOY_ENABLE_CUDA=OFF \
	  -DCONVOY_SANITIZE=thread -DCONVOY_BUILD_EXAMPLES=OFF -DCONVOY_WERROR=ON $(CMAKE_FLAGS)
	cmake --build $(BUILD)-tsan -j $(JOBS)
	CONVOY_BLAS_THREADS=1 OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  ctest --test-dir $(BUILD)-tsan $(CTEST_FLAGS) -j $(JOBS) -L tsan

# libFuzzer targets (tests/fuzz), built with Clang, AddressSanitizer and
# UndefinedBehaviorSanitizer in a build directory of their own, each run for
# FUZZ_TIME seconds from its checked-in seed corpus. New inputs the fuzzer
# finds go to $(BUILD)-fuzz/corpus, crashes to $(BUILD)-fuzz/artifacts; the
# checked-in corpus is only read.
FUZZ_TIME ?= 10
FUZZ_TARGETS = fuzz_conv_params fuzz_tune_cache
fuzz:
	@CONVOY_NEED_FUZZER=1 scripts/install-deps.sh
	CC=clang cmake -S . -B $(BUILD)-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCONVOY_FUZZ=ON \
	  -DCONVOY_ENABLE_CUDA=OFF -DCONVOY_BUILD_EXAMPLES=OFF -DBUILD_TESTING=OFF $(CMAKE_FLAGS)
	cmake --build $(BUILD)-fuzz -j $(JOBS) --target $(FUZZ_TARGETS)
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(BUILD)-fuzz/corpus/$$t $(BUILD)-fuzz/artifacts; \
	  echo "fuzz: $$t for $(FUZZ_TIME) s (log: $(BUILD)-fuzz/$$t.log)"; \
	  if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	      $(BUILD)-fuzz/tests/fuzz/$$t $(BUILD)-fuzz/corpus/$$t tests/fuzz/corpus/$$t \
	      -max_total_time=$(FUZZ_TIME) -artifact_prefix=$(BUILD)-fuzz/artifacts/ \
	      -print_final_stats=1 >$(BUILD)-fuzz/$$t.log 2>&1; then \
	    tail -n 80 $(BUILD)-fuzz/$$t.log; echo "fuzz: $$t failed"; exit 1; \
	  fi; \
	  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units)' $(BUILD)-fuzz/$$t.log; \
	done

# docs/timeline.png: eight traced steps of the training program on two CPU
# streams (its first steps run on a runtime of their own that writes the
# trace), the last 40 ms of them drawn by scripts/trace_timeline.py
# with the dependency arrows. Installs matplotlib first
# (scripts/install-deps.sh); PYTHON=... picks the interpreter, else the first
# of python3 and /usr/bin/python3 that has matplotlib.
TRACE_JSON ?= $(BUILD)/train_trace.json
TRACE_PICTURE ?= docs/timeline.png
trace-picture: build
	@CONVOY_NEED_PYTHON=1 CONVOY_NEED_MATPLOTLIB=1 scripts/install-deps.sh
	CONVOY_TRACE=$(TRACE_JSON) $(BUILD)/examples/train_fashion_mnist --epochs 1 --limit 2048 \
	  --test-limit 1000 --streams 2 --quiet >/dev/null
	@py="$(PYTHON)"; \
	if [ -z "$$py" ]; then for p in python3 /usr/bin/python3; do \
	  if $$p -c 'import matplotlib' >/dev/null 2>&1; then py=$$p; break; fi; done; fi; \
	set -x; "$${py:-python3}" scripts/trace_timeline.py $(TRACE_JSON) -o $(TRACE_PICTURE) \
	  --arrows --last-ms 40 \
	  --title "train_fashion_mnist: about two training steps (batch 128), 2 CPU streams"

format:
	clang-format -i $$($(SOURCES))

# Fails, naming each file and line, when a tracked source is not formatted.
format-check:
	clang-format --dry-run --Werror $$($(SOURCES))

clean:
	rm -rf $(BUILD) $(BUILD)-sanitize $(BUILD)-tsan $(BUILD)-fuzz
