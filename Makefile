# Thin wrapper over Meson/Ninja: the commands a newcomer types. See README.md.
#   make         build (build/)
#   make run     build and start virtue-blk (vhost-user-blk) on a RAM disk at $(SOCKET)
#   make demo    the negotiation and DMA demonstration (one process, no QEMU)
#   make check   every test: normal build, ASan+UBSan build with libFuzzer, TSan for threaded code
#   make bench   benchmarks (virtue-bench; a guest on virtue-blk vs qemu-storage-daemon;
#                the virtue front-end on both; virtue net vs DPDK virtio-user)
#   make fuzz    the fuzz targets for longer (FUZZ_SECONDS, default 600)
BUILD      ?= build
FUZZ_SECONDS ?= 600
SOCKET     ?= /tmp/virtue-blk.sock

.PHONY: all build run demo check bench fuzz deps install clean format

all: build

deps:
	@scripts/deps.sh

$(BUILD)/build.ninja:
	@scripts/deps.sh
	meson setup $(BUILD) --buildtype=debugoptimized

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

run: build
	$(BUILD)/tools/virtue-blk --socket-path $(SOCKET) --size 64M --stats 10

demo: build
	$(BUILD)/tools/virtue-demo

check:
	@scripts/check.sh

bench:
	@scripts/deps.sh
	@[ -f build-bench/build.ninja ] || meson setup build-bench --buildtype=release
	ninja -C build-bench
	build-bench/tools/virtue-bench mem
	build-bench/tools/virtue-bench ring
	build-bench/tools/virtue-bench ringcost
	sh tests/interop/guest-kit.sh .cache/guest-kit
	python3 tests/interop/blk_bench.py --kit .cache/guest-kit \
		--backend-bin build-bench/tools/virtue-blk
	python3 tests/interop/blk_frontend_bench.py --virtue build-bench/tools/virtue \
		--virtue-blk build-bench/tools/virtue-blk --bench-bin build-bench/tools/virtue-bench
	@if command -v dpdk-testpmd >/dev/null 2>&1; then \
		echo "python3 tests/interop/net_bench.py --bin build-bench/tests/virtue-net-interop ..."; \
		python3 tests/interop/net_bench.py --bin build-bench/tests/virtue-net-interop \
			--bench-bin build-bench/tools/virtue-bench --seconds 2 --warmup 0.5 --rounds 4; \
	else \
		echo "net bench skipped: dpdk-testpmd not installed (Debian: dpdk-dev or dpdk)"; \
	fi

fuzz:
	@scripts/deps.sh
	@[ -f build-asan/build.ninja ] || CC=clang meson setup build-asan \
		-Db_sanitize=address,undefined -Db_lundef=false -Dfuzz=true
	ninja -C build-asan
	@for f in build-asan/tests/fuzz_*; do \
		[ -x "$$f" ] || continue; \
		tests/fuzz/run-fuzzer.sh "$$f" "tests/fuzz/corpus/$${f##*/fuzz_}" $(FUZZ_SECONDS) || exit 1; \
	done

install: build
	meson install -C $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-tsan build-bench
