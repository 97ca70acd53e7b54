# spire-agent for TPM-equipped KubeEdge edge nodes, with tpm-agent and edge-workload as single executables: no
# Node.js layer. tpm-agent drives the TPM through tpm2-tools, so this base is Debian slim rather than distroless.
# Build context: an unpacked release archive (npm run release):
#   tar -xzf dist/release/spire-edge-attestors-<version>-linux-x64.tar.gz && cd spire-edge-attestors-<version>-linux-x64
#   docker build -f images/spire-agent.Dockerfile -t spire-edge-agent:demo .
ARG SPIRE_VERSION=1.15.3
FROM ghcr.io/spiffe/spire-agent:${SPIRE_VERSION} AS spire

FROM debian:bookworm-slim
# tpm2-tools 5.x with the device TCTI (/dev/tpmrm0); nothing else is installed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tpm2-tools=5.4-1 libtss2-tcti-device0=3.2.1-3 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=spire /opt/spire/bin/spire-agent /opt/spire/bin/spire-agent
# plugin_checksum in agent.conf is the sha256 of each file (SHA256SUMS in the archive).
COPY --chmod=0555 bin/tpm-agent bin/edge-workload /opt/spire/plugins/
WORKDIR /opt/spire
ENTRYPOINT ["/opt/spire/bin/spire-agent", "run"]
