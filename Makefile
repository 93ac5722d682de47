# Two commands do everything: `make run` (install, then serve the app) and `make test`.
.PHONY: setup run test bench

setup:
	@bash scripts/setup.sh

run: setup
	.venv/bin/python app.py $(ARGS)

# Tests train real models in-process: preload the fast malloc there too (adapters/runtime.py).
test: setup
	LD_PRELOAD="$$(.venv/bin/python -c 'from adapters.runtime import allocator_library as a; print(a() or "")')" \
	TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=1099511627776 .venv/bin/python -m pytest -q $(ARGS)

bench: setup
	.venv/bin/python benchmarks/load_speed.py
