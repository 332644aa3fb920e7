#!/usr/bin/env bash
# connect() latency through a ClusterIP vs a direct connect, at 1 / 1,000 / 10,000
# services, and the socket hook's own cost per connect(). Prints figures; never fails on
# a number (this machine is shared: compare the ratios, measured in the same run).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
./scripts/install-deps.sh
swift build -c release --product swiftlane
swift build -c release --product swiftlane-bench
SWIFTLANE_BIN="$PWD/.build/release/swiftlane" exec .build/release/swiftlane-bench socket-lb "$@"
