# The demo mTLS services (kubeedge-demo/mtls), bundled into one file first:
#   npx esbuild kubeedge-demo/mtls/main.ts --bundle --platform=node --target=node24 --format=esm \
#     --outfile=dist/kubeedge-demo/greeter.mjs \
#     "--banner:js=import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);"
#   docker build -f kubeedge-demo/images/greeter.Dockerfile -t greeter:demo .
FROM node:24-bookworm-slim
COPY dist/kubeedge-demo/greeter.mjs /app/greeter.mjs
USER 1000
ENTRYPOINT ["node", "/app/greeter.mjs"]
