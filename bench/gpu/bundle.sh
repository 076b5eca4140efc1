#!/usr/bin/env bash
# bench/gpu/bundle.sh DIR: bundles bench/gpu/bench.ts into DIR/bench.mjs (every dependency
# inside but `webgpu`, which DIR/node_modules/webgpu or the repo's node_modules provides).
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:?usage: bundle.sh DIR}
mkdir -p "$dir"
node_modules/.bin/esbuild bench/gpu/bench.ts --bundle --platform=node --format=esm --target=node20 \
  --external:webgpu --outfile="$dir/bench.mjs" --log-level=warning \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
