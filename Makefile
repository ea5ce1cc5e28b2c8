# The README's commands. Each sets up .venv/ itself (scripts/bootstrap.sh, idempotent).
.PHONY: demo loop test lint setup
demo:
	@scripts/bootstrap.sh --quiet
	@.venv/bin/python -m endo_depth_ros.cli demo $(ARGS)

loop:
	@scripts/bootstrap.sh --quiet
	@.venv/bin/python -m endo_depth_ros.cli loop $(ARGS)

test:
	@scripts/test.sh

setup:
	@scripts/bootstrap.sh

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
