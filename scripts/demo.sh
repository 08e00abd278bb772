#!/usr/bin/env bash
# Install Cairn and run the main job: the offline demo on the embedded default store.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/cairn demo "$@"
