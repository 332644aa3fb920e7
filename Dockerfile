# syntax=docker/dockerfile:1
# Multi-stage build: the Swift toolchain and clang build the controller and its BPF
# objects (embedded in the binary); the runtime image carries only the binary and the
# libraries it links (libbpf, libelf, libcurl).

FROM swift:6.1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libbpf-dev libelf-dev zlib1g-dev libcurl4-openssl-dev clang llvm pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources Sources
COPY Plugins Plugins
COPY bpf bpf
RUN swift build -c release --product swiftlane --static-swift-stdlib \
 && install -D -s .build/release/swiftlane /out/swiftlane

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libbpf1 libelf1 zlib1g libcurl4 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/swiftlane /usr/local/bin/swiftlane
COPY config/swiftlane.yaml /etc/swiftlane/swiftlane.yaml
ENTRYPOINT ["/usr/local/bin/swiftlane"]
CMD ["run", "--config", "/etc/swiftlane/swiftlane.yaml"]
