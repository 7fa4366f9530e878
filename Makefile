# The two commands of the README (demo, test) work on a fresh machine (root, Debian): they install what is
# missing first. `unit` is the fast tier (no Docker needed); `lint` is what CI checks besides the tests (the code,
# and that requirements/deploy.txt still locks the CLI's dependencies of setup.cfg: docs/installing.md).
.PHONY: demo test unit lint

demo:
	tools/bootstrap.sh --demo
	python3 tools/demo.py

test:
	tools/bootstrap.sh
	python3 -m pytest -q --durations=15

unit:
	tools/bootstrap.sh --python-only
	DOCKER_HOST=tcp://127.0.0.1:9 python3 -m pytest -q tests/unit

lint:
	tools/bootstrap.sh --python-only
	ruff check runner agent tests tools bench
	ruff format --check runner agent tests tools bench
	mypy --strict runner agent
	lint-imports
	python3 tools/deploylock.py
