#!/usr/bin/env bash
# Run DVC from its own tool environment (.venv-dvc), created on first use.
# DVC's hydra-core pins antlr4-python3-runtime 4.9, which breaks Dagster's asset selections,
# so DVC never shares the project's .venv.   Usage: scripts/dvc.sh repro | push | pull | status
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-dvc/bin/dvc ]; then
  "${PYTHON:-python3.11}" -m venv .venv-dvc
  .venv-dvc/bin/python -m pip --disable-pip-version-check -q install "dvc==3.67.1" "dvc-s3==3.3.0"
  .venv-dvc/bin/python -m pip check
fi
[ -x .venv/bin/cairn ] || scripts/bootstrap.sh
export DVC_NO_ANALYTICS=1
exec .venv-dvc/bin/dvc "$@"
