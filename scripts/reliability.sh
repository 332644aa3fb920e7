#!/usr/bin/env bash
# The reliability suite's long variants (docs/reliability.md): the same tests CI runs,
# with bigger bounds, printing their figures. As root, on a BPF-capable machine.
#
#   sudo ./scripts/reliability.sh            # soak 600 s, 10 restart rounds, 3 min stall,
#                                            # 20,000 property iterations, fuzz 300 s/target
#   SOAK_SECONDS=3600 FUZZ_SECONDS=1800 sudo -E ./scripts/reliability.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: the kernel tests load BPF programs and create namespaces" >&2; exit 1; }
export SWIFTLANE_SOAK_SECONDS=${SOAK_SECONDS:-600}
export SWIFTLANE_FUZZ_ITERATIONS=${FUZZ_ITERATIONS:-20000}
export SWIFTLANE_RELIABILITY_LONG=1
swift build --build-tests
# Each test prints one line of figures; keep those and the verdicts.
swift test --skip-build --filter \
    'RestartUnderLoadTests|APIServerFaultTests|BadInputTests|MapCapacityTests|BackendAndSlotCapacityTests|ChurnSoakTests|ManifestDecoderPropertyTests|WatchStreamPropertyTests' \
    2>&1 | grep -E '^(restart under load|API server fault|churn soak|manifest property|watch framing)|error:|Executed [0-9]+ tests?,'
FUZZ_SECONDS=${FUZZ_SECONDS:-300} ./scripts/fuzz.sh 0
