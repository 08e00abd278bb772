#!/usr/bin/env bash
# Install Cairn with its test tools, then run lint, type checks and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test
.venv/bin/ruff check integrity pipelines tests benchmarks
.venv/bin/mypy
# --dist loadscope: a module's tests run on one worker, so its module-scoped fixture (a whole Dagster
# run, a webserver, two DVC clones) is built once, not once per worker (xdist_group is ignored under pytest 9).
exec .venv/bin/python -m pytest -n 2 --dist loadscope --durations=25 "$@"
