#!/usr/bin/env bash
# bench/gpu/prepare.sh: run HERE, in the repo root, once before a GPU session (needs
# node_modules and the Debian archive; ~1-2 min, mostly xz). Fills .gl/ (ignored by git, ~35 MiB):
#   - the Vulkan / GL loader packages the device tool's README lists (NVIDIA's ICD comes with
#     the machine, the loaders do not);
#   - this machine's Node (nodesource build: needs only libc/libstdc++) and dawn.node;
#   - bench.mjs: bench/gpu/bench.ts bundled with everything but `webgpu`.
# Then, on the device machine: run(command="bash bench/gpu/run.sh", carry=[".gl"], timeout_s=540).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -f package.json ] || { echo "prepare.sh: run from the uhd repo"; exit 2; }
mkdir -p .gl/node_modules/webgpu/dist/linux-x64 /tmp/amd64/partial
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
apt-get $o update -qq
(cd .gl && rm -f ./*.deb && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
xz -T0 -6 -c "$(readlink -f "$(command -v node)")" > .gl/node.xz
cp node_modules/webgpu/index.js node_modules/webgpu/package.json .gl/node_modules/webgpu/
xz -T0 -6 -c node_modules/webgpu/dist/linux-x64/dawn.node > .gl/dawn.node.xz
bash bench/gpu/bundle.sh .gl
du -sh .gl
total=$(du -sbc .gl $(git ls-files) 2>/dev/null | tail -1 | cut -f1)
echo "working tree + .gl: $((total / 1048576)) MiB (the device tool carries at most 64)"
