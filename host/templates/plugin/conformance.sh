#!/usr/bin/env bash
# Builds the plugin, then runs sluice's conformance checks on it against a
# scratch SQLite database loaded with fixture.sql, with the step params in
# params.json. Exit 0: every check passed; 1: a check failed (the table says
# which and why); 2: bad input.
#
#   ./conformance.sh [--json]        SLUICE=/path/to/sluice to pick the binary
set -euo pipefail
cd "$(dirname "$0")"
wasm=$(./build.sh)
exec "${SLUICE:-sluice}" conformance "$wasm" --target sqlite \
  --fixture fixture.sql --params-file params.json "$@"
