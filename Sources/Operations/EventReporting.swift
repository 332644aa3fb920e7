import KubeAPI
import ServiceLifecycle

/// Runs an `EventRecorder` in the service group: posts queued Events until shutdown.
public struct EventReporting: Service {
    public let recorder: EventRecorder

    public init(recorder: EventRecorder) {
        self.recorder = recorder
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await recorder.run()
        }
    }
}
