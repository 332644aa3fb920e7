// swift-tools-version:6.0
import PackageDescription

// Layering (each arrow is "is used by"):
//   CLibBPF, CLibCurl (C shims) ─┐
//   ServiceModel (pure values) ──┼─> Reconciler (diff) ─> Datapath (kernel) ─> Controller ─> swiftlane
//   BPFObjects (embedded .o) ────┘
// KubeAPI (libcurl list/watch client) feeds the Controller.
// NetLab (namespaces, cgroups, traffic probes) serves the demo, the tests and the benchmarks.
// Operations (metrics, health, config reload) sits beside the Controller and uses it.
let package = Package(
    name: "Swiftlane",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "swiftlane", targets: ["swiftlane"]),
        .executable(name: "swiftlane-bench", targets: ["swiftlane-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
    ],
    targets: [
        // MARK: C shims
        .target(
            name: "CLibBPF",
            linkerSettings: [.linkedLibrary("bpf"), .linkedLibrary("elf"), .linkedLibrary("z")]
        ),
        .target(
            name: "CLibCurl",
            linkerSettings: [.linkedLibrary("curl")]
        ),

        // MARK: Pure layers
        .target(
            name: "ServiceModel",
            dependencies: [.product(name: "Yams", package: "Yams")]
        ),
        .target(
            name: "Reconciler",
            dependencies: ["ServiceModel"]
        ),
        .target(
            name: "KubeAPI",
            dependencies: [
                "CLibCurl", "ServiceModel",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),

        // MARK: Kernel layer
        .executableTarget(name: "bpf-embed", path: "Sources/bpf-embed"),
        .plugin(name: "EmbedBPFObjects", capability: .buildTool(), dependencies: ["bpf-embed"]),
        .target(name: "BPFObjects", plugins: ["EmbedBPFObjects"]),
        .target(
            name: "Datapath",
            dependencies: [
                "CLibBPF", "BPFObjects", "Reconciler", "ServiceModel",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // MARK: Controller and executables
        .target(
            name: "Controller",
            dependencies: [
                "ServiceModel", "Reconciler", "Datapath", "KubeAPI",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The operator's view of a running controller: Prometheus metrics, the health and
        // readiness endpoints (SwiftNIO HTTP/1.1), configuration reload, log levels.
        .target(
            name: "Operations",
            dependencies: [
                "Controller", "Datapath", "KubeAPI", "Reconciler", "ServiceModel",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(name: "NetLab", dependencies: ["CLibBPF", "BPFObjects"]),
        .executableTarget(
            name: "swiftlane",
            dependencies: [
                "Controller", "Datapath", "ServiceModel", "NetLab", "KubeAPI", "Operations", "Reconciler",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "swiftlane-bench",
            dependencies: [
                "Controller", "Datapath", "ServiceModel", "Reconciler", "NetLab", "KubeAPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // MARK: Tests (pure ones run anywhere; kernel ones need root + BPF)
        .testTarget(name: "ServiceModelTests", dependencies: ["ServiceModel"], exclude: ["Fixtures"]),
        .testTarget(name: "ReconcilerTests", dependencies: ["Reconciler", "ServiceModel"]),
        .testTarget(
            name: "ControllerTests",
            dependencies: ["Controller", "ServiceModel", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "KubeAPITests",
            dependencies: [
                "KubeAPI", "Controller", "Datapath", "ServiceModel", "NetLab", "swiftlane",
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["FakeAPIServer", "Fixtures"]
        ),
        .testTarget(
            name: "OperationsTests",
            dependencies: [
                "Operations", "Controller", "Datapath", "KubeAPI", "Reconciler", "ServiceModel", "NetLab", "swiftlane",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .testTarget(
            name: "DatapathKernelTests",
            dependencies: ["Datapath", "CLibBPF", "Reconciler", "ServiceModel", "Controller", "NetLab", "Operations", "swiftlane"]
        ),
    ],
    swiftLanguageModes: [.v5]
)
