#!/usr/bin/env bash
# bench/gpu/run.sh: the GPU benchmark on a bare NVIDIA machine (the device tool's), from the
# files bench/gpu/prepare.sh put in .gl/:
#     run(command="bash bench/gpu/run.sh", carry=[".gl"], timeout_s=540)
# It unpacks the Vulkan loaders, Node and dawn.node, records the card (nvidia-smi), PyTorch's
# matmul on it (bench/gpu/torch_ref.py), then bench/gpu/bench.ts, within ~7 minutes; results
# go to $OUT (they come back) as gpu-<device>.{md,json}, torch.json, nvidia-smi.txt, bench.log.
#
# DRY=1 bash bench/gpu/run.sh: the same steps here, on llvmpipe and the CPU's PyTorch, at tiny
# sizes, with this machine's node and a fresh bundle in .gl-dry/ (tests/bench/gpu-dry.test.ts).
set -uo pipefail
cd "$(dirname "$0")/../.."
DRY=${DRY:-0}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
T=/tmp/uhd-gpu; mkdir -p $T
if [ "$DRY" = 1 ]; then
  NODE=node
  bash bench/gpu/bundle.sh .gl-dry || exit 3
  BUNDLE=.gl-dry/bench.mjs
  PY=${PYTHON:-/usr/bin/python3}
  BUDGET=${BENCH_BUDGET_S:-90}
else
  [ -d .gl ] || { echo "run.sh: .gl/ missing: run bench/gpu/prepare.sh here and carry .gl"; exit 2; }
  for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
  icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  if [ -f $icd ] && ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
    export VK_DRIVER_FILES=$icd VK_ICD_FILENAMES=$icd
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  fi
  xz -dc .gl/node.xz > $T/node && chmod +x $T/node
  [ -f .gl/node_modules/webgpu/dist/linux-x64/dawn.node ] || xz -dc .gl/dawn.node.xz > .gl/node_modules/webgpu/dist/linux-x64/dawn.node
  NODE=$T/node
  BUNDLE=.gl/bench.mjs
  PY=python3
  BUDGET=${BENCH_BUDGET_S:-300}
  export UHD_WEBGPU_BACKEND=${UHD_WEBGPU_BACKEND:-vulkan} # no silent fall-back to GL on the GPU
fi
{ date -u; uname -a; nproc; $NODE --version; ldconfig -p | grep -i libvulkan || echo "no libvulkan in ldconfig"
  echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-}"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu --format=csv 2>&1 || true
} > "$OUT/nvidia-smi.txt" 2>&1
echo "== PyTorch on the same card"
PYTHONUNBUFFERED=1 DRY=$DRY timeout 150 $PY bench/gpu/torch_ref.py "$OUT/torch.json" 2>&1 | tee "$OUT/torch.log" | tail -20 || echo "torch reference failed (see torch.log)"
echo "== uhd"
DRY=$DRY BENCH_BUDGET_S=$BUDGET BENCH_OUT="$OUT" TORCH_JSON="$OUT/torch.json" timeout $((BUDGET + 90)) $NODE "$BUNDLE" 2>&1 | grep -v "artificially reduced" | tee "$OUT/bench.log" | cut -c1-300
status=${PIPESTATUS[0]}
ls "$OUT"
exit "$status"
