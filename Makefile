# The two commands of the README: `make demo` (set up, start the stack, run the demo edit)
# and `make test` (set up, run the test suite; it starts its own Redis).
.PHONY: setup demo up test lint bench

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/curvedit demo

up: setup
	.venv/bin/curvedit up

test: setup
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/lint-imports

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; .venv/bin/python $$b; done
