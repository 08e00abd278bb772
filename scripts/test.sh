#!/usr/bin/env bash
# Install Cairn with its test tools, then run lint, type checks and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test
.venv/bin/ruff check integrity pipelines tests benchmarks
.venv/bin/mypy
exec .venv/bin/python -m pytest -n 2 --durations=25 "$@"
