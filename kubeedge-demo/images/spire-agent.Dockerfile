# SPIRE agent for TPM-equipped KubeEdge edge nodes. Build context: the repository root, after `npm run build`.
#   docker build -f kubeedge-demo/images/spire-agent.Dockerfile -t spire-edge-agent:demo .
# tpm-agent drives the TPM through tpm2-tools; both plugins need Node.js 20.
ARG SPIRE_VERSION=1.13.3
FROM ghcr.io/spiffe/spire-agent:${SPIRE_VERSION} AS spire

FROM node:20-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends tpm2-tools \
 && rm -rf /var/lib/apt/lists/*
COPY --from=spire /opt/spire/bin/spire-agent /opt/spire/bin/spire-agent
COPY dist/bin/tpm-agent dist/bin/edge-workload /opt/spire/plugins/
WORKDIR /opt/spire
ENTRYPOINT ["/opt/spire/bin/spire-agent", "run"]
