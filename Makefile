# Two commands do everything: `make run` (install, then serve the app) and `make test`.
.PHONY: setup run test bench

setup:
	@bash scripts/setup.sh

run: setup
	.venv/bin/python app.py $(ARGS)

# Tests train real models in-process: preload the fast malloc there too (adapters/runtime.py).
# TEST_WORKERS processes share the cores, a whole test file to each (pytest-xdist): on 2 cores, two
# one-thread processes do more than one with two threads. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: setup
	LD_PRELOAD="$$(.venv/bin/python -c 'from adapters.runtime import allocator_library as a; print(a() or "")')" \
	TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=1099511627776 .venv/bin/python -m pytest -q \
	-n $(TEST_WORKERS) --dist loadfile $(ARGS)

bench: setup
	.venv/bin/python benchmarks/load_speed.py
