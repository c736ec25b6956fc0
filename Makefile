# `make run`: set-up, Release build, then the main job on the default input.
# `make test`: set-up, build, then the whole suite.
# Checked builds (fuzz/README.md): `make sanitize` (ASan + UBSan suite), `make tsan` (ThreadSanitizer
# on the multi-threaded tests), `make fuzz` (each libFuzzer target for FUZZ_SECONDS).
BUILD ?= build
SANITIZE_BUILD ?= build-sanitize
FUZZ_BUILD ?= build-fuzz
TSAN_BUILD ?= build-tsan
JOBS ?= $(shell nproc)
FUZZ_SECONDS ?= 60
# CI sets WERROR=ON: warnings fail the build.
WERROR ?= OFF

.PHONY: setup build run test clean sanitize tsan fuzz

setup:
	@bash scripts/install-deps.sh
	@bash scripts/setup-model.sh || echo "setup: continuing without the real model: its tests will fail (ATTNKIT_SKIP_MODEL=1 skips them)"
	@bash scripts/setup-python.sh

build: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DATTNKIT_WERROR=$(WERROR) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# The main job: exact causal attention against every static pattern on a structured synthetic input.
run: build
	./$(BUILD)/attnkit compare

# Tests run two at a time, each with its own OpenMP team: passive waiting keeps the teams from
# spinning on each other's cores.
# Then the Python suite (tests/python and the training examples' short tests, pytest in .venv/).
# A failure is run once more at the end, so that its output closes the log (a CI log keeps its
# tail) and shows whether it repeats.
test: build
	cd $(BUILD) && export OMP_WAIT_POLICY=passive && { ctest --output-on-failure -j $(JOBS) || \
	  { echo "test: the failed tests once more:"; ctest --rerun-failed --output-on-failure; exit 1; }; }
	OMP_WAIT_POLICY=passive .venv/bin/python -m pytest -q tests/python examples

# AddressSanitizer and UndefinedBehaviorSanitizer on the suite and the CLI it calls. GCC at -O1:
# clang's UBSan takes twice as long to build the SIMD kernels, and -O2 twice again. Trimmed
# (they run in `make test`): the eight cases that run the 135M model or `make run` for minutes
# (16 of the suite's 35 minutes of test time under ASan) and the sweeps' SCALAR instances (AVX-512 and AVX2
# keep their own, with both tail widths).
SANITIZE_SKIP = RealModel\.(DensePerplexity|CausalPattern|PrefillLogits|PasskeyIsFound)|ModelCliReal\.(PasskeyJson|PerplexityJson|BenchJson)|CliCompare\.DefaultSet|_SCALAR
sanitize: setup
	@cmake -S . -B $(SANITIZE_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1" -DATTNKIT_SANITIZE=address,undefined \
	  -DATTNKIT_WERROR=$(WERROR) >/dev/null
	@cmake --build $(SANITIZE_BUILD) -j $(JOBS)
	cd $(SANITIZE_BUILD) && export OMP_WAIT_POLICY=passive \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 && \
	  { ctest --output-on-failure -j $(JOBS) -E '$(SANITIZE_SKIP)' || \
	  { echo "sanitize: the failed tests once more:"; ctest --rerun-failed --output-on-failure; exit 1; }; }

# The libFuzzer targets (clang, AddressSanitizer; UBSan too outside the SIMD kernels, which
# `make sanitize` covers; AVX2 and the baseline), each run for FUZZ_SECONDS from its seeds.
fuzz: setup
	@cmake -S . -B $(FUZZ_BUILD) -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1" -DATTNKIT_SANITIZE=address,undefined \
	  -DATTNKIT_FUZZ=ON -DATTNKIT_FEWER_SIMD_TARGETS=ON -DATTNKIT_WERROR=$(WERROR) >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzzers
	@bash scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# ThreadSanitizer needs OpenMP's own annotations: clang's libomp with the Archer tool loaded
# (OMP_TOOL_LIBRARIES), else every OpenMP barrier looks like a race (scripts/tsan.sh).
tsan: setup
	@bash scripts/tsan.sh $(TSAN_BUILD) $(JOBS) $(WERROR)

clean:
	rm -rf $(BUILD) $(SANITIZE_BUILD) $(FUZZ_BUILD) $(TSAN_BUILD) build-python
