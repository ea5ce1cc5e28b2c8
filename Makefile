# The README's commands. Each sets up .venv/ itself (scripts/bootstrap.sh, idempotent).
.PHONY: test lint setup
setup:
	@scripts/bootstrap.sh

test:
	@scripts/test.sh

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
