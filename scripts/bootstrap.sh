#!/usr/bin/env bash
# Create (or reuse) the project virtualenv in .venv and install Cairn into it.
#   scripts/bootstrap.sh          runtime dependencies
#   scripts/bootstrap.sh --test   plus the test and lint tools
#   scripts/bootstrap.sh --bench  plus the benchmark peers (ART, cleanlab) and Debian's Fashion-MNIST
# Offline-friendly: everything comes from the package index; nothing is fetched at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "bootstrap: $PYTHON not found; Cairn needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip >/dev/null

# The CPU build of torch from local disk first; without it pip would take a multi-GB CUDA build.
"${PIP[@]}" install "torch==2.13.0"

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
[ "${1:-}" = "--bench" ] && extras="[test,bench]"
"${PIP[@]}" install -e ".${extras}"
# Dependency conflicts are a supply-chain problem too: refuse to continue on a broken set.
.venv/bin/python -m pip check

# DVC lives in its own tool environment (its hydra-core pins an antlr4 runtime that breaks
# Dagster's asset selections); the tests reproduce the pipeline with it.
if [ "${1:-}" = "--test" ] && [ ! -x .venv-dvc/bin/dvc ]; then
  "$PYTHON" -m venv .venv-dvc
  .venv-dvc/bin/python -m pip --disable-pip-version-check -q install "dvc==3.67.1" "dvc-s3==3.3.0"
  .venv-dvc/bin/python -m pip check
fi

# System packages the tests use for real parts: Debian's Chromium (the Dagster UI is driven
# headless with Python playwright, never `playwright install`) and a PostgreSQL server (the
# deployment's Dagster instance). Tests that need one skip, saying why, where it is missing.
if [ "${1:-}" = "--test" ] || [ "${1:-}" = "--bench" ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
  # The per-rate poisoning benchmark's image data (offline: a Debian package, never a download).
  [ "${1:-}" = "--bench" ] && [ ! -d /usr/share/datasets/fashion-mnist ] && missing+=(dataset-fashion-mnist)
  if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
    { $SUDO apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; }; } \
      || echo "bootstrap: could not install ${missing[*]} with apt-get; the tests that need them will be skipped" >&2
  fi
fi
