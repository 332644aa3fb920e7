#!/usr/bin/env bash
# The README's test command (and CI's): installs what is needed, then runs every test,
# the kernel tests included (they need root and run for real on a BPF-capable machine).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: the kernel tests load BPF programs and create namespaces" >&2; exit 1; }
./scripts/install-deps.sh
swift build --build-tests
swift test
