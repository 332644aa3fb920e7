# syntax=docker/dockerfile:1
# Swiftlane's image: docker build -t swiftlane:0.1.0 .
#
# Stage 1 builds with the Swift toolchain (Swift 6.2 or later: swift-prometheus needs it)
# and clang, which compiles bpf/*.c during `swift build` (the EmbedBPFObjects plugin); the
# BPF objects are embedded in the binary, so the binary is all the runtime stage needs.
# Stage 2 is a slim Debian of the same release as the toolchain image, with only the C
# libraries the binary links: libbpf, libelf (+zlib), libcurl. The Swift runtime and
# Foundation are linked statically.

FROM swift:6.3-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libbpf-dev libelf-dev zlib1g-dev libcurl4-openssl-dev pkg-config clang llvm binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Plugins Plugins
COPY bpf bpf
COPY Sources Sources
# The manifest names the test targets, and SwiftPM refuses a package whose target folders
# are missing; they come along but are not built.
COPY Tests Tests
RUN swift build -c release --product swiftlane --static-swift-stdlib \
 && install -D --strip .build/release/swiftlane /out/swiftlane \
 && /out/swiftlane version

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libbpf1 libelf1 zlib1g libcurl4 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/swiftlane /usr/local/bin/swiftlane
# The default configuration; in a cluster the ConfigMap is mounted over /etc/swiftlane.
COPY config/swiftlane.yaml /etc/swiftlane/swiftlane.yaml
# Runs as root: loading BPF programs needs the capabilities the DaemonSet grants
# (BPF, NET_ADMIN, SYS_ADMIN), which only root's capability sets receive.
ENTRYPOINT ["/usr/local/bin/swiftlane"]
CMD ["run", "--config", "/etc/swiftlane/swiftlane.yaml"]
