# spire-server with the TPM node attestor, as a single executable: no Node.js layer.
# Build context: an unpacked release archive (npm run release), whose bin/ holds the single executables:
#   tar -xzf dist/release/spire-edge-attestors-<version>-linux-x64.tar.gz && cd spire-edge-attestors-<version>-linux-x64
#   docker build -f images/spire-server.Dockerfile -t spire-edge-server:demo .
# SPIRE_VERSION is the release the end-to-end tests run (tools/spire/, docs/spire-compatibility.md).
ARG SPIRE_VERSION=1.15.3
FROM ghcr.io/spiffe/spire-server:${SPIRE_VERSION} AS spire

# The single executables embed Node 24 and link only glibc, libstdc++ and libgcc: distroless "cc" has exactly those.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=spire /opt/spire/bin/spire-server /opt/spire/bin/spire-server
# plugin_checksum in server.conf is the sha256 of this file (SHA256SUMS in the archive).
COPY --chmod=0555 bin/tpm-server /opt/spire/plugins/tpm-server
WORKDIR /opt/spire
USER 65532:65532
ENTRYPOINT ["/opt/spire/bin/spire-server", "run"]
