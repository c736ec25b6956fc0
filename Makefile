# `make run`: set-up, Release build, then the main job on the default input.
# `make test`: set-up, build, then the whole suite.
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: setup build run test clean

setup:
	@bash scripts/install-deps.sh
	@bash scripts/setup-model.sh || echo "setup: continuing without the real model (its tests will be skipped)"

build: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# The main job: exact causal attention against every static pattern on a structured synthetic input.
run: build
	./$(BUILD)/attnkit compare

# Tests run two at a time, each with its own OpenMP team: passive waiting keeps the teams from
# spinning on each other's cores.
test: build
	cd $(BUILD) && OMP_WAIT_POLICY=passive ctest --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD)
