# The README's commands. `make setup` once, then `make test`.
.PHONY: setup test test-slow train
setup:
	./scripts/setup.sh

test:  # lint, format check, then the tests (one worker process per core, a test file per worker); all must pass
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/python -m pytest -q -n auto --dist loadfile

test-slow:
	.venv/bin/python -m pytest -q -m slow

train:
	.venv/bin/torchcls train
