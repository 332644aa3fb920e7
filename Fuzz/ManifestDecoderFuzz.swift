// libFuzzer target: the manifest parser (ServiceModel.ManifestDecoder) on arbitrary bytes,
// as YAML and as JSON, with and without the object size cap. Any crash, sanitizer report or
// hang is a finding; thrown ManifestErrors are the expected answer to bad input, and each
// must describe itself (the text an operator reads). Built by scripts/fuzz.sh together with
// the ServiceModel sources (one module), not part of `swift build`.
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func manifestDecoderFuzz(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let data = Data(bytes: bytes, count: count)
    for source in ["fuzz.yaml", "fuzz.json"] {
        for cap in [nil, 256] as [Int?] {
            do {
                let objects = try ManifestDecoder.decode(data, source: source, maximumObjectBytes: cap)
                // What decodes must translate without trapping, as the controller would.
                _ = Translator.plan(services: objects.services, endpointSlices: objects.endpointSlices,
                                    node: ProxyNode(name: "node-a", labels: [:], addresses: [], podCIDRs: []),
                                    options: TranslationOptions())
            } catch let error as ManifestError {
                precondition(!error.description.isEmpty)
                precondition(error.source == source)
            } catch {
                fatalError("ManifestDecoder threw something other than a ManifestError: \(error)")
            }
        }
    }
    return 0
}
