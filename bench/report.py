#!/usr/bin/env python3
"""Turns the JSON that scripts/bench.sh collected into REPORT.md, one PNG per figure and a
console summary. Every verdict on a target is computed here from the data."""

import argparse
import glob
import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")  # headless: no display on a benchmark host
import matplotlib.pyplot as plt  # noqa: E402

PEERS = ["iptables-nft", "iptables-legacy", "nftables"]
DATAPATHS = ["swiftlane"] + PEERS
COLORS = {"swiftlane": "tab:blue", "iptables-nft": "tab:red", "iptables-legacy": "tab:orange",
          "nftables": "tab:green", "direct": "tab:gray"}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def spread(values):
    """(min, median, max) of the values, or None when there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return min(values), statistics.median(values), max(values)


def fmt(triple, scale=1.0, digits=1):
    if triple is None:
        return "–"
    lo, mid, hi = (v * scale for v in triple)
    return f"{mid:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def fmt_ratio(value, digits=3):
    return "–" if value is None else f"{value:.{digits}f}×"


class Report:
    def __init__(self, out):
        self.out = out
        self.lines = []
        self.targets = []  # (figure, target, value text, met: True/False/None)

    def add(self, *lines):
        self.lines.extend(lines)

    def table(self, header, rows):
        self.add("| " + " | ".join(header) + " |", "|" + "---|" * len(header))
        for row in rows:
            self.add("| " + " | ".join(str(cell) for cell in row) + " |")
        self.add("")

    def target(self, figure, text, value, limit, better):
        """better: "le" (value ≤ limit) or "ge"; value None means not measured."""
        if value is None:
            self.targets.append((figure, text, "not measured", None))
            return
        met = value <= limit if better == "le" else value >= limit
        self.targets.append((figure, text, f"{value:.4g}", met))

    def targets_table(self, figure):
        rows = [(t, v, "met" if m else ("not measured" if m is None else "**not met**"))
                for f, t, v, m in self.targets if f == figure]
        if rows:
            self.add("Targets (computed from the data above):", "")
            self.table(["target", "measured", "verdict"], rows)

    def plot(self, name, fig):
        path = os.path.join(self.out, name)
        fig.tight_layout()
        fig.savefig(path, dpi=72)
        plt.close(fig)
        self.add(f"![{name}]({name})", "")


def scaling_plot(series, ylabels, xlabel, title):
    """Two log-log panels against the service count; series: (label, color, linestyle,
    points) with points (services, left (min, median, max), right (min, median, max))."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for label, color, linestyle, points in series:
        xs = [p[0] for p in points]
        for axis, index in ((axes[0], 1), (axes[1], 2)):
            mids = [p[index][1] for p in points]
            errors = [[p[index][1] - p[index][0] for p in points], [p[index][2] - p[index][1] for p in points]]
            axis.errorbar(xs, mids, yerr=errors, marker="o", capsize=3, color=color, label=label, linestyle=linestyle)
    for axis, ylabel in zip(axes, ylabels):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig


# Figures 1 and 2: ClusterIP TCP connect and UDP request/reply.

def traffic_rows(measurements, kind):
    """datapath → services → dict of spreads over rounds (µs, conn/s) and ratios."""
    table = {}
    for m in measurements:
        rounds = m.get(kind) or []
        entry = {"notMeasured": m.get("notMeasured")}
        if rounds:
            entry["p50"] = spread([r["via"]["latency"]["p50Ns"] / 1000 for r in rounds])
            entry["p99"] = spread([r["via"]["latency"]["p99Ns"] / 1000 for r in rounds])
            entry["rate"] = spread([r["via"]["cyclesPerSecond"] for r in rounds])
            entry["direct"] = spread([r["direct"]["latency"]["p50Ns"] / 1000 for r in rounds])
            entry["directRate"] = spread([r["direct"]["cyclesPerSecond"] for r in rounds])
            entry["toDirect"] = spread([r["via"]["latency"]["p50Ns"] / max(1, r["direct"]["latency"]["p50Ns"])
                                        for r in rounds])
        table.setdefault(m["datapath"], {})[m["services"]] = entry
    return table


def median_of(entry, key):
    return entry[key][1] if entry and entry.get(key) else None


def traffic_figure(report, number, title, measurements, kind, unit):
    table = traffic_rows(measurements, kind)
    scales = sorted({m["services"] for m in measurements})
    own = table.get("swiftlane", {})
    header = ["datapath", "services", f"p50 µs med (min–max)", "p99 µs med (min–max)", f"{unit}/s med (min–max)",
              "direct p50 µs (same rounds)", "p50 / direct"] + [f"Swiftlane p50 / {p}" for p in PEERS]
    rows = []
    for datapath in DATAPATHS:
        for n in scales:
            entry = table.get(datapath, {}).get(n)
            if entry is None:
                continue
            if entry.get("p50") is None:
                rows.append([datapath, f"{n:,}", entry.get("notMeasured") or "no figures"] + [""] * (len(header) - 3))
                continue
            vs_peers = []
            for peer in PEERS:
                peer_entry = table.get(peer, {}).get(n)
                vs_peers.append(fmt_ratio(ratio(median_of(own.get(n), "p50"), median_of(peer_entry, "p50")))
                                if datapath == "swiftlane" else "")
            rows.append([datapath, f"{n:,}", fmt(entry["p50"]), fmt(entry["p99"]), fmt(entry["rate"], digits=0),
                         fmt(entry["direct"]), fmt(entry["toDirect"], digits=2)] + vs_peers)
    report.add(f"## Figure {number}: {title}", "")
    report.table(header, rows)

    series = []
    for datapath in DATAPATHS + ["direct"]:
        source = "swiftlane" if datapath == "direct" else datapath
        points = [(n, e["direct" if datapath == "direct" else "p50"], e["directRate" if datapath == "direct" else "rate"])
                  for n, e in sorted(table.get(source, {}).items()) if e.get("p50")]
        if points:
            series.append((datapath + (" (no rules)" if datapath == "direct" else ""), COLORS[datapath],
                           "--" if datapath == "direct" else "-", points))
    fig = scaling_plot(series, ["p50 latency (µs)", f"{unit}/s (one flow at a time)"], "services",
                       f"Figure {number}: {title} (median, min–max over rounds)")
    report.plot(f"figure{number}-{kind}.png", fig)
    return table


def clusterip_targets(report, table):
    own = table.get("swiftlane", {})
    at = 10_000
    report.target(1, "10,000 services: Swiftlane TCP connect p50 ≤ 1.1× direct (median of per-round ratios)",
                  median_of(own.get(at), "toDirect"), 1.1, "le")
    for peer in ("iptables-nft", "iptables-legacy"):
        report.target(1, f"10,000 services: Swiftlane TCP connect p50 ≤ 0.1× {peer}",
                      ratio(median_of(own.get(at), "p50"), median_of(table.get(peer, {}).get(at), "p50")), 0.1, "le")
    report.target(1, "10,000 services: Swiftlane TCP connect p50 ≤ 0.75× nftables",
                  ratio(median_of(own.get(at), "p50"), median_of(table.get("nftables", {}).get(at), "p50")), 0.75, "le")
    for peer in ("iptables-nft", "iptables-legacy"):
        report.target(1, f"10 services: Swiftlane TCP connect p50 no worse than {peer} (≤ 1×)",
                      ratio(median_of(own.get(10), "p50"), median_of(table.get(peer, {}).get(10), "p50")), 1.0, "le")


# Figure 3: programming time.

def programming_figure(report, measurements, programming):
    scales = sorted(set(programming) | {m["services"] for m in measurements})
    peers = {(m["datapath"], m["services"]): m for m in measurements if m["datapath"] != "swiftlane"}
    maps_only = {m["services"]: m for m in measurements if m["datapath"] == "swiftlane"}
    header = ["datapath", "services", "from empty s med (min–max)", "one endpoint change ms med (min–max)",
              "no-op resync map writes"]
    rows, series = [], {}
    for n in scales:
        p = programming.get(n)
        if p:
            empty = spread(p["fromEmptyRounds"])
            change = (p["changeMinMilliseconds"], p["changeP50Milliseconds"], p["changeMaxMilliseconds"])
            rows.append(["swiftlane (controller: translate + diff + map writes)", f"{n:,}", fmt(empty, digits=4),
                         fmt(change, digits=3), p["noopResyncMapWrites"]])
            series.setdefault("swiftlane", []).append((n, empty, change))
        m = maps_only.get(n)
        if m and m.get("programSeconds"):
            rows.append(["swiftlane (maps only: diff + map writes)", f"{n:,}", fmt(spread(m["programSeconds"]), digits=4),
                         fmt(spread(m["oneChangeSeconds"]), scale=1000, digits=3), ""])
        for peer in PEERS:
            m = peers.get((peer, n))
            if not m:
                continue
            if not m.get("programSeconds"):
                rows.append([peer, f"{n:,}", m.get("notMeasured") or "no figures", "", ""])
                continue
            empty, change = spread(m["programSeconds"]), spread([s * 1000 for s in m["oneChangeSeconds"]])
            rows.append([peer, f"{n:,}", fmt(empty, digits=4), fmt(change, digits=3), "n/a"])
            series.setdefault(peer, []).append((n, empty, change))
    report.add("## Figure 3: programming time", "",
               "From empty: N services with 4 endpoints each. One change: one endpoint of one service replaced "
               "(Swiftlane: a sync; iptables: kube-proxy's partial `iptables-restore --noflush`; nftables: the "
               "changed chains with `nft -f`). Peers' times cover the tool only, not generating its input.", "")
    report.table(header, rows)

    fig = scaling_plot([(d, COLORS[d], "-", points) for d, points in series.items()],
                       ["from empty (s)", "one endpoint change (ms)"], "services (4 endpoints each)",
                       "Figure 3: programming time (median, min–max)")
    report.plot("figure3-programming.png", fig)

    at = 10_000
    own = programming.get(at)
    own_empty = statistics.median(own["fromEmptyRounds"]) if own else None
    fastest = [statistics.median(peers[(p, at)]["programSeconds"]) for p in PEERS
               if (p, at) in peers and peers[(p, at)].get("programSeconds")]
    report.target(3, "10,000 services: from empty (controller sync) ≥ 10× faster than the fastest measured peer "
                  "(peer / Swiftlane)", ratio(min(fastest), own_empty) if fastest and own_empty else None, 10, "ge")
    maps = maps_only.get(at)
    maps_empty = statistics.median(maps["programSeconds"]) if maps and maps.get("programSeconds") else None
    report.target(3, "10,000 services: from empty (maps only) ≥ 10× faster than the fastest measured peer (peer / Swiftlane)",
                  ratio(min(fastest), maps_empty) if fastest and maps_empty else None, 10, "ge")
    for peer in ("iptables-nft", "iptables-legacy"):
        m = peers.get((peer, at))
        partial = statistics.median(m["oneChangeSeconds"]) * 1000 if m and m.get("oneChangeSeconds") else None
        report.target(3, f"10,000 services: one change (controller sync) ≤ 0.01× the {peer} partial restore",
                      ratio(own["changeP50Milliseconds"] if own else None, partial), 0.01, "le")
        maps = maps_only.get(at)
        report.target(3, f"10,000 services: one change (maps only) ≤ 0.01× the {peer} partial restore",
                      ratio(statistics.median(maps["oneChangeSeconds"]) * 1000 if maps and maps.get("oneChangeSeconds")
                            else None, partial), 0.01, "le")
    for n in sorted(programming):
        report.target(3, f"{n:,} services: a no-op resync makes 0 map writes",
                      programming[n]["noopResyncMapWrites"], 0, "le")


# Figure 4: NodePort, whatever rows `swiftlane-bench forwarding --json` (4a, one node's
# forwarding: issue 5's targets) and `swiftlane-bench nodeport --json` (4b, end to end with
# sockets on both ends: context) wrote.

def nodeport_figure(report, rows, failure, title, png, targets=True, note=None):
    report.add(f"## {title}", "")
    if note:
        report.add(note, "")
    spreads = {}
    figures = rows if isinstance(rows, dict) else {}
    if isinstance(rows, dict) and isinstance(rows.get("summaries"), list):
        # One row per datapath with {min, median, max} per rate: the medians, spreads kept.
        for r in rows["summaries"]:
            for k, v in r.items():
                if isinstance(v, dict) and "median" in v:
                    spreads[(r.get("datapath"), k)] = v
        rows = [{k: (v["median"] if isinstance(v, dict) and "median" in v else v) for k, v in r.items()}
                for r in rows["summaries"]]
    elif isinstance(rows, dict):  # rows under some key of an object: every list of rows in it
        rows = [r for value in rows.values() if isinstance(value, list) for r in value]
    if not isinstance(rows, list) or not rows:
        report.add(f"Figures not available ({failure or 'no JSON written'}).", "")
        if targets:
            report.target(4, "XDP ≥ 4× iptables and ≥ 2× tc packets/s", None, 0, "ge")
        return
    rows = [r for r in rows if isinstance(r, dict) and "datapath" in r]
    labels = sorted({k for r in rows for k, v in r.items() if isinstance(v, str) and k != "datapath"})
    rates = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and k.endswith("PerSecond")})
    def cell(r, k):
        if not isinstance(r.get(k), (int, float)):
            return ""
        spread = spreads.get((r["datapath"], k))
        return f"{r[k]:,.0f} ({spread['min']:,.0f}–{spread['max']:,.0f})" if spread else f"{r[k]:,.0f}"
    if spreads:
        report.add("Medians over rounds (min–max in brackets).", "")
    report.table(["datapath"] + labels + rates, [[r["datapath"]] + [r.get(k, "") for k in labels] +
                                                 [cell(r, k) for k in rates] for r in rows])
    if rates:
        fig, axes = plt.subplots(1, len(rates), figsize=(4.5 * len(rates), 3.6), squeeze=False)
        names = [" ".join([r["datapath"]] + [str(r.get(k, "")) for k in labels]) for r in rows]
        for axis, rate in zip(axes[0], rates):
            axis.barh(names, [r.get(rate, 0) or 0 for r in rows], color="tab:blue")
            axis.set_xlabel(rate)
            axis.tick_params(axis="y", labelsize=7)
        fig.suptitle(title, fontsize=9)
        report.plot(png, fig)
    node = figures.get("nodeNanosecondsPerPacket")
    if isinstance(node, dict) and node:
        # `swiftlane-bench forwarding` with its direct floor: the loop's own cost subtracted.
        flows = figures.get("nodeNanosecondsPerNewFlow") or {}
        report.add("The node alone: the direct loop's cost per packet (generator straight to the sink, on the same "
                   "core) subtracted from each datapath's, giving the node's own ns per packet and what one core of "
                   "the node would forward. Information only: the targets below are checked on the packets/s above, "
                   "which include the loop's cost and so understate every ratio.", "")
        report.table(["datapath", "node ns/packet", "packets/s, node alone", "node ns/new flow", "new flows/s, node alone"],
                     [[d, f"{ns:,.0f}", f"{1e9 / max(ns, 1):,.0f}", f"{flows.get(d, 0):,.0f}",
                       f"{1e9 / max(flows.get(d, 0), 1):,.0f}"] for d, ns in node.items()])
        ratios = figures.get("nodePacketsPerSecondRatios") or {}
        flow_ratios = figures.get("nodeNewFlowsPerSecondRatios") or {}
        if ratios:
            report.table(["ratio, the node alone", "packets/s", "new flows/s"],
                         [[k, f"{v:.2f}×", f"{flow_ratios.get(k, 0):.2f}×"] for k, v in sorted(ratios.items())])
    if not targets:
        return

    # XDP against iptables and tc, row groups matched on every other label.
    def kind(datapath):
        d = datapath.lower()
        if "dsr" in d:
            return "dsr"
        if "xdp" in d:
            return "xdp-native" if "native" in d else "xdp-generic" if "generic" in d else "xdp"
        return "iptables" if "iptables" in d else "tc" if "tc" in d or d == "swiftlane" else None
    groups = {}
    for r in rows:
        key = tuple(r.get(k, "") for k in labels)
        if kind(r["datapath"]):
            groups.setdefault(key, {})[kind(r["datapath"])] = r
    found = False
    for key, by_kind in sorted(groups.items()):
        # Issue 5's targets: XDP ≥ 4× iptables, tc ≥ 1.5× iptables, XDP ≥ 2× tc.
        checks = [(x, "iptables", 4) for x in ("xdp", "xdp-native", "xdp-generic")] + [("tc", "iptables", 1.5)] + \
                 [(x, "tc", 2) for x in ("xdp", "xdp-native", "xdp-generic")]
        for rate in rates:
            for mine, peer, limit in checks:
                if mine in by_kind and peer in by_kind:
                    found = True
                    report.target(4, f"{' '.join(map(str, key))} {rate}: {mine} ≥ {limit}× {peer}".replace("  ", " "),
                                  ratio(by_kind[mine].get(rate), by_kind[peer].get(rate)), limit, "ge")
    if not found:
        report.target(4, "XDP ≥ 4× iptables and ≥ 2× tc (no XDP rows in this binary's output)", None, 0, "ge")


# Figure 5: controller cost.

def controller_figure(report, programming, scale):
    report.add("## Figure 5: controller CPU and memory", "")
    p = programming.get(scale)
    if not p:
        report.add(f"Not available: no programming run at {scale:,} services.", "")
        return
    cost, churn = p["fromEmptyCost"], p.get("churn")
    rows = [["sync from empty", f"{p['services']:,} services / {p['endpoints']:,} endpoints", f"{cost['wallSeconds']:.3f}",
             f"{cost['cpuSeconds']:.3f}", f"{100 * cost['cpuSeconds'] / max(cost['wallSeconds'], 1e-9):.0f}%",
             f"{cost['peakRSSMiB']:.0f}", "1 sync"]]
    if churn:
        c = churn["cost"]
        rows.append([f"{churn['ratePerSecond']:,} endpoint changes/s", f"{churn['changesApplied']:,} changes",
                     f"{c['wallSeconds']:.1f}", f"{c['cpuSeconds']:.2f}",
                     f"{100 * c['cpuSeconds'] / max(c['wallSeconds'], 1e-9):.0f}%", f"{c['peakRSSMiB']:.0f}",
                     f"{churn['syncs']:,} syncs, p50 {churn['syncP50Milliseconds']:.2f} ms, p99 "
                     f"{churn['syncP99Milliseconds']:.2f} ms, max lag {churn['maxLagMilliseconds']:.1f} ms"])
    report.add("The real controller path (ProxySyncer on the kernel maps), one process: CPU from getrusage, "
               "peak RSS from VmHWM reset at the start of each phase. CPU / wall under 100% while syncing "
               "means the process waited: for a CPU on this shared machine, or for the kernel.", "")
    report.table(["phase", "load", "wall s", "CPU s", "CPU / wall", "peak RSS MiB", "syncs"], rows)
    fig, axes = plt.subplots(1, 2, figsize=(7, 3))
    names = [r[0] for r in rows]
    axes[0].bar(names, [float(r[3]) for r in rows], color="tab:blue")
    axes[0].set_ylabel("CPU seconds")
    axes[1].bar(names, [float(r[5]) for r in rows], color="tab:purple")
    axes[1].set_ylabel("peak RSS (MiB)")
    for axis in axes:
        axis.tick_params(axis="x", labelsize=7)
    fig.suptitle("Figure 5: controller cost", fontsize=9)
    report.plot("figure5-controller.png", fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", help="the directory scripts/bench.sh wrote")
    parser.add_argument("--elapsed", type=int, help="seconds the run took")
    args = parser.parse_args()
    out = args.out
    machine = load(os.path.join(out, "machine.json")) or {}
    clusterip = load(os.path.join(out, "clusterip.json")) or []
    programming = {}
    for path in glob.glob(os.path.join(out, "programming-*.json")):
        figures = load(path)
        if figures:
            programming[figures["services"]] = figures
    failures = {os.path.basename(p)[:-len(".failed")]: open(p).read().strip()
                for p in glob.glob(os.path.join(out, "*.failed"))}

    report = Report(out)
    mode = machine.get("mode", "?")
    report.add("# Swiftlane benchmark report", "",
               f"Run: **{mode}** (`sudo ./scripts/bench.sh{' --quick' if mode == 'quick' else ''}"
               f"{'' if os.path.normpath(out) == 'bench/results' else ' --out ' + out}`), "
               f"{machine.get('date', '?')}, commit {machine.get('commit', '?')}"
               + (f", took {args.elapsed // 60} min {args.elapsed % 60} s." if args.elapsed else "."), "",
               "Machine: kernel {k}, {c} CPUs ({m}), {g} GiB, load average at start {l}; {i}; {n}. The machine is "
               "shared with other work: compare ratios within this run, not absolute figures across runs.".format(
                   k=machine.get("kernel", "?"), c=machine.get("cpus", "?"), m=machine.get("cpuModel", "?"),
                   g=machine.get("memoryGiB", "?"), l=" ".join(machine.get("loadAverageAtStart", [])),
                   i=machine.get("iptables", "iptables ?"), n=machine.get("nft", "nft ?")), "",
               "Peers, on the same lab in the same run: kube-proxy's iptables layout (KUBE-SERVICES → KUBE-SVC-* "
               "with `statistic` → KUBE-SEP-* DNAT, KUBE-MARK-MASQ) loaded with `iptables-restore` on the nft and "
               "legacy backends; kube-proxy's nftables layout (service-ips verdict map, per-service chains with "
               "`numgen`) loaded with `nft -f`; direct (the client talks to the backends' addresses in rotation). Each latency "
               "figure is measured turn by turn with a direct exchange in the same thread; min–max are over rounds. "
               "A peer whose rule load would exceed the run's budget is reported as not measured.", "")
    if failures:
        report.add("Figures that failed in this run: " + "; ".join(f"{k}: {v}" for k, v in sorted(failures.items())), "")

    if clusterip:
        table = traffic_figure(report, 1, "ClusterIP TCP connect() latency and connections/s", clusterip, "tcp", "connections")
        clusterip_targets(report, table)
        report.targets_table(1)
        traffic_figure(report, 2, "ClusterIP UDP request/reply latency (a fresh socket per exchange)", clusterip, "udp",
                       "exchanges")
        report.add("No target is set for UDP in issue 7.", "")
    else:
        report.add("## Figures 1 and 2", "", f"Not available: {failures.get('clusterip', 'no clusterip.json')}.", "")
    programming_figure(report, clusterip, programming)
    report.targets_table(3)
    nodeport_figure(report, load(os.path.join(out, "forwarding.json")), failures.get("forwarding"),
                    "Figure 4a: NodePort forwarding through one node", "figure4a-forwarding.png",
                    note="`swiftlane-bench forwarding`: a closed loop of frames in XDP, generator -> node A -> "
                         "remote backends -> XDP sink -> generator: no socket, skb or allocation on either end, so "
                         "node A's datapath is what limits the rate (the loop's stages share one core). packetsPerSecond: "
                         "64-byte UDP frames of established flows; newFlowsPerSecond: TCP SYNs, each a new "
                         "5-tuple the node must track and source-NAT. Offered rates are in forwarding.json.")
    report.targets_table(4)
    nodeport_figure(report, load(os.path.join(out, "nodeport.json")), failures.get("nodeport"),
                    "Figure 4b: NodePort end to end, sockets on both ends", "figure4b-nodeport.png", targets=False,
                    note="`swiftlane-bench nodeport`: an AF_PACKET sender in the client namespace, a UDP socket in "
                         "the pod, real TCP connections; sender, receiver and both nodes share 2 cores, so the "
                         "sockets dominate these figures: context, not the measure of the targets.")
    controller_figure(report, programming, 10_000)

    report.add("## Reproduce", "",
               "```sh", "sudo ./scripts/bench.sh --quick   # a few minutes", "sudo ./scripts/bench.sh           # the full run",
               "```", "", "Each figure alone (after `swift build -c release --product swiftlane-bench`; as root): "
               "`swiftlane-bench clusterip-peers`, `swiftlane-bench programming`, `swiftlane-bench forwarding`, "
               "`swiftlane-bench nodeport`, `swiftlane-bench socket-lb`; the exact arguments of this run are in the `.log` files next to this "
               "report. See bench/README.md.", "")
    with open(os.path.join(out, "REPORT.md"), "w") as f:
        f.write("\n".join(report.lines))

    print(f"\nbenchmark report: {os.path.join(out, 'REPORT.md')} ({mode} run)")
    for figure, text, value, met in report.targets:
        verdict = "met" if met else "not measured" if met is None else "NOT MET"
        print(f"  figure {figure}: {text}: {value} → {verdict}")
    if failures:
        print("  failed figures: " + ", ".join(sorted(failures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
