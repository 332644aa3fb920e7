#!/usr/bin/env bash
# Installs what building and running Swiftlane needs on a Debian/Ubuntu machine, and
# mounts bpffs. Idempotent: installs only what is missing. Needs root.
set -euo pipefail

packages=(
  libbpf-dev libelf-dev zlib1g-dev libcurl4-openssl-dev pkg-config  # build: libbpf, libcurl
  clang llvm                                                      # BPF objects (Swift's clang works too)
  iproute2 bpftool                                                # namespaces, veth, inspection
  ethtool                                                         # veth offloads for native XDP labs
  dnsmasq-base bind9-dnsutils                                     # DNS server and dig for demo/tests
  iptables nftables                                               # kube-proxy peers in the benchmarks
  python3 python3-h2 openssl                                      # KubeAPI tests: fake API server (HTTP/2), test PKI
  python3-prometheus-client                                       # operations tests: the reference Prometheus text parser
  python3-matplotlib                                              # scripts/bench.sh: the report's plots
)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Operations tests validate manifests/ against the Kubernetes OpenAPI schemas, offline:
# kubernetes-validate bundles them (PyPI; Debian has no offline validator). Installed for
# the python3 first on PATH, the one the tests run; without pip there, Debian's pip.
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages kubernetes-validate
fi

# Swiftlane mounts bpffs itself when it starts; tests and tools expect it too.
if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
  mount -t bpf bpf /sys/fs/bpf
fi
