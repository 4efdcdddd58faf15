# The README's commands. `make setup` once, then `make test`.
.PHONY: setup test test-slow train
setup:
	./scripts/setup.sh

test:  # lint, format check, then the tests; all three must pass
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/python -m pytest -q

test-slow:
	.venv/bin/python -m pytest -q -m slow

train:
	.venv/bin/torchcls train
