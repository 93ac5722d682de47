# Two commands do everything: `make run` (install, then serve the app) and `make test`.
.PHONY: setup run test bench

setup:
	@bash scripts/setup.sh

run: setup
	.venv/bin/python app.py $(ARGS)

test: setup
	.venv/bin/python -m pytest -q $(ARGS)

bench: setup
	.venv/bin/python benchmarks/load_speed.py
