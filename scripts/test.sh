#!/usr/bin/env bash
# The whole test suite on a fresh machine with Python 3.11: installs ceuskit
# with its test extras (pinned), then runs the linter, the type checker and
# pytest.  Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
"$PY" -m pip install --disable-pip-version-check -q -e ".[test]"
"$PY" -m ruff check src tests benchmarks
"$PY" -m mypy
"$PY" -m pytest -q "$@"
