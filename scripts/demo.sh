#!/usr/bin/env bash
# The README's "run it" command: installs what is needed, builds, and runs
# `swiftlane demo` (namespaces + socket LB + controller on examples/demo), which
# removes everything it created when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: the demo loads BPF programs and creates namespaces" >&2; exit 1; }
./scripts/install-deps.sh
swift build -c release --product swiftlane
exec .build/release/swiftlane demo --manifests examples/demo "$@"
