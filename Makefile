# Two commands on a fresh machine: `make demo` runs the main job, `make test` installs what tests need and runs them.
.PHONY: demo test install lint format

demo: install
	OMP_NUM_THREADS=1 .venv/bin/comm-demo

install:
	bash scripts/install.sh

test:
	bash scripts/test.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format:
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .
