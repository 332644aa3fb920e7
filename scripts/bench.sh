#!/usr/bin/env bash
# Every benchmark figure in one command: Swiftlane against kube-proxy's iptables
# (iptables-restore, nft and legacy backends) and nftables (nft -f) datapaths and a direct
# connection, all on this machine in this run. Writes bench/results/REPORT.md, one JSON
# file and one PNG plot per figure, and prints a summary. Never fails on a number: the
# report says which targets were met, computed from the data.
#
#   sudo ./scripts/bench.sh           # the full run (within ~45 minutes on 2 cores)
#   sudo ./scripts/bench.sh --quick   # fewer scales and rounds (a few minutes)
#   sudo ./scripts/bench.sh --out DIR # somewhere else than bench/results
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full
out=bench/results
while (($#)); do
  case "$1" in
    --quick) mode=quick ;;
    --full) mode=full ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "run as root (namespaces, BPF, iptables)" >&2; exit 1; }

if [ "$mode" = quick ]; then
  scales=(10 1000 10000)
  rounds=2 iterations=200 load_budget=30 changes=50 churn_seconds=5
  nodeport_args=(--connections 300 --seconds 1 --rounds 1)
  forwarding_args=(--seconds 1 --rounds 1)
else
  scales=(10 1000 10000 30000)
  rounds=5 iterations=1000 load_budget=300 changes=200 churn_seconds=20
  nodeport_args=()
  forwarding_args=(--rounds 5)
fi
churn_scale=10000  # figure 5: 10,000 services / 40,000 endpoints

./scripts/install-deps.sh
swift build -c release --product swiftlane
swift build -c release --product swiftlane-bench
bench=.build/release/swiftlane-bench  # relative: the logs show the command as typed here
export SWIFTLANE_BIN="$PWD/.build/release/swiftlane"  # the lab's probe servers and clients

mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.png "$out"/*.log "$out"/*.failed
started=$(date +%s)
python3 - "$out/machine.json" "$mode" "$out" <<'EOF'
import json, os, platform, subprocess, sys, datetime
def run(*argv):
    try: return subprocess.run(argv, capture_output=True, text=True).stdout.strip()
    except OSError: return ""
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
json.dump({
    "mode": sys.argv[2], "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "kernel": platform.release(), "cpus": os.cpu_count(), "cpuModel": model,
    "loadAverageAtStart": open("/proc/loadavg").read().split()[:3],
    "memoryGiB": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    # Changes outside the results (which this run is replacing) mark the commit dirty.
    "commit": run("git", "rev-parse", "--short", "HEAD")
              + ("-dirty" if run("git", "status", "--porcelain", "--", ".", ":(exclude)" + sys.argv[3]) else ""),
    "iptables": run("iptables-nft", "--version"), "nft": run("nft", "--version"),
}, open(sys.argv[1], "w"), indent=2)
EOF

# One figure: runs the command (line-buffered: progress shows through tee) with its
# output in $out/NAME.log and on the console;
# a failing figure is recorded in $out/NAME.failed and the run goes on.
figure() {
  local name="$1"; shift
  echo "== $name"
  if ! { echo "\$ $*"; stdbuf -oL "$@"; } 2>&1 | tee "$out/$name.log"; then
    echo "$name failed; see $out/$name.log" | tee "$out/$name.failed"
  fi
}

figure clusterip "$bench" clusterip-peers --services "${scales[@]}" --endpoints 4 --rounds "$rounds" \
  --iterations "$iterations" --load-budget "$load_budget" --json "$out/clusterip.json"
for n in "${scales[@]}"; do
  churn=0
  [ "$n" = "$churn_scale" ] && churn=$churn_seconds
  figure "programming-$n" "$bench" programming --services "$n" --endpoints 4 --rounds "$rounds" \
    --changes "$changes" --churn-rate 1000 --churn-seconds "$churn" --json "$out/programming-$n.json"
done
# Bounded: a datapath that stopped forwarding would otherwise hold the whole run.
figure forwarding timeout 900 "$bench" forwarding "${forwarding_args[@]}" --json "$out/forwarding.json"
figure nodeport timeout 1500 "$bench" nodeport "${nodeport_args[@]}" --json "$out/nodeport.json"

elapsed=$(( $(date +%s) - started ))
# Debian's python3-matplotlib belongs to Debian's python3, which need not be first on PATH.
python=/usr/bin/python3
"$python" -c 'import matplotlib' 2>/dev/null || python=python3
"$python" bench/report.py "$out" --elapsed "$elapsed"
