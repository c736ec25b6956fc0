# `make run`: set-up, Release build, then the main job on the default input.
# `make test`: set-up, build, then the whole suite.
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: setup build run test clean

setup:
	@bash scripts/install-deps.sh
	@bash scripts/setup-model.sh

build: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# The main job: exact causal attention against every static pattern on a structured synthetic input.
run: build
	./$(BUILD)/attnkit compare

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD)
