# The two commands of the README. Both work on a fresh machine (root, Debian): they install what is missing first.
.PHONY: demo test lint

demo:
	tools/bootstrap.sh
	python3 tools/demo.py

test:
	tools/bootstrap.sh
	python3 -m pytest -q

lint:
	ruff check runner agent tests tools bench
	mypy --strict runner agent
