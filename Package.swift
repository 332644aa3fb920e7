// swift-tools-version:6.0
import PackageDescription

// Layering (each arrow is "is used by"):
//   CLibBPF, CLibCurl (C shims) ─┐
//   ServiceModel (pure values) ──┼─> Reconciler (diff) ─> Datapath (kernel) ─> Controller ─> swiftlane
//   BPFObjects (embedded .o) ────┘
// KubeAPI (libcurl list/watch client) feeds the Controller.
// NetLab (namespaces, cgroups, traffic probes) serves the demo, the tests and the benchmarks.
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
        .target(name: "NetLab"),
        .executableTarget(
            name: "swiftlane",
            dependencies: [
                "Controller", "Datapath", "ServiceModel", "NetLab", "KubeAPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
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
            name: "DatapathKernelTests",
            dependencies: ["Datapath", "CLibBPF", "Reconciler", "ServiceModel", "Controller", "NetLab", "swiftlane"]
        ),
    ],
    swiftLanguageModes: [.v5]
)
