#!/usr/bin/env bash
# Fuzzes the manifest parser (ServiceModel.ManifestDecoder) and the watch-stream line
# framer and event decoder (KubeAPI) with libFuzzer (swiftc -sanitize=fuzzer,address),
# seeded with the spec fixtures and the test fixtures. Not part of `swift build`.
#
#   scripts/fuzz.sh [RUNS]               # RUNS iterations per target (default 20000)
#   FUZZ_SECONDS=600 scripts/fuzz.sh 0   # time-bounded instead (RUNS 0: no iteration bound)
#
# Prints, per target, the iterations run and the crashes found; exits 1 if any crashed.
# Crash inputs are kept under .build/fuzz/<target>/crashes/ (rerun one with
# `.build/fuzz/<target>/fuzzer CRASH-FILE`).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20000}
[ "$RUNS" = 0 ] && RUNS=-1  # libFuzzer: -1 runs without an iteration bound
SECONDS_LIMIT=${FUZZ_SECONDS:-0}
SWIFTC=${SWIFTC:-$(command -v swiftc || echo /opt/swift/usr/bin/swiftc)}
OUT=.build/fuzz

# The dependencies (Yams, CYaml, and ServiceModel for the watch target) come uninstrumented
# from the debug build; the code under test is compiled with coverage and ASan.
swift build --target KubeAPI >/dev/null
DEBUG=.build/debug
YAMS_OBJECTS=("$DEBUG"/Yams.build/*.swift.o "$DEBUG"/CYaml.build/src/*.c.o)
CYAML_MAP=$(ls .build/checkouts/Yams/Sources/CYaml/include/module.modulemap)
COMMON=(-sanitize=fuzzer,address -parse-as-library -g -Onone -I "$DEBUG/Modules"
        -Xcc -fmodule-map-file="$CYAML_MAP" -Xcc -I -Xcc "$(dirname "$CYAML_MAP")")

build() {  # name, module, sources…
    local name=$1 module=$2
    shift 2
    mkdir -p "$OUT/$name/corpus" "$OUT/$name/crashes"
    # ld.gold warns about every ASan helper symbol; keep the output for a failed build only.
    if ! "$SWIFTC" "${COMMON[@]}" -module-name "$module" "$@" -o "$OUT/$name/fuzzer" >"$OUT/$name/build.log" 2>&1; then
        grep -v 'ld.gold: warning' "$OUT/$name/build.log" >&2
        exit 1
    fi
}

build manifest ManifestFuzz Fuzz/ManifestDecoderFuzz.swift Sources/ServiceModel/*.swift "${YAMS_OBJECTS[@]}"
build watch WatchFuzz Fuzz/WatchStreamFuzz.swift Sources/KubeAPI/Framing/LineFramer.swift \
    Sources/KubeAPI/Watch/WireTypes.swift "$DEBUG"/ServiceModel.build/*.swift.o "${YAMS_OBJECTS[@]}"

# Seeds: every manifest and JSON fixture; for the watch target, fixtures as watch events.
# The spec fixtures sit beside the checkout (../shared); the tests keep copies of them.
for file in ../shared/spec/fixtures/* Tests/ServiceModelTests/Fixtures/* Tests/KubeAPITests/Fixtures/* examples/demo/*; do
    [ -f "$file" ] || continue
    cp "$file" "$OUT/manifest/corpus/$(basename "$file")"
    case "$file" in
        *.json) { printf '\003\100\005\007\013'; printf '{"type":"ADDED","object":'; tr -d '\n' <"$file"; printf '}\n'; } \
                    >"$OUT/watch/corpus/$(basename "$file")" ;;
    esac
done

status=0
for name in manifest watch; do
    log="$OUT/$name/fuzz.log"
    set +e
    (cd "$OUT/$name" && ./fuzzer -runs="$RUNS" -max_total_time="$SECONDS_LIMIT" -max_len=65536 -timeout=20 \
        -rss_limit_mb=4096 -artifact_prefix=crashes/ -print_final_stats=1 corpus) >"$log" 2>&1
    result=$?
    set -e
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    crashes=$(find "$OUT/$name/crashes" -type f | wc -l)
    echo "fuzz $name: $runs iterations, exit $result, $crashes crash file(s) in $OUT/$name/crashes"
    if [ "$result" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        status=1
        grep -m5 -E 'ERROR|Fatal|Precondition|panic' "$log" || tail -20 "$log"
    fi
done
exit $status
