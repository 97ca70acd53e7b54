# SPIRE server with the TPM node attestor. Build context: the repository root, after `npm ci && npm run build`.
#   docker build -f kubeedge-demo/images/spire-server.Dockerfile -t spire-edge-server:demo .
# Our plugins are Node.js programs (a single file with a node shebang), so the image needs Node.js 20 next to
# the spire-server binary (statically linked in the official image).
ARG SPIRE_VERSION=1.13.3
FROM ghcr.io/spiffe/spire-server:${SPIRE_VERSION} AS spire

FROM node:20-bookworm-slim
COPY --from=spire /opt/spire/bin/spire-server /opt/spire/bin/spire-server
COPY dist/bin/tpm-server /opt/spire/plugins/tpm-server
WORKDIR /opt/spire
ENTRYPOINT ["/opt/spire/bin/spire-server", "run"]
