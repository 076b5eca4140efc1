"""PyTorch's matmul on the same card, as the reference for bench/gpu/bench.ts.

fp32 with TF32 off (the like-for-like ceiling of our f32 kernel), fp32 with TF32 on, bf16, at
1024-8192, timed with CUDA events (mean of 20 after 3 warm-ups, random inputs), plus a 2 GiB
device-to-device copy (bytes read + written). DRY=1: tiny sizes on the CPU (no CUDA needed).
Writes one JSON object to argv[1].
"""
import json
import os
import sys
import time

import torch

DRY = os.environ.get("DRY") == "1"
dev = "cuda" if torch.cuda.is_available() and not DRY else "cpu"
out = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu (dry run)", "gemm": []}


def timed(fn, reps):
    for _ in range(3):
        fn()
    if dev == "cuda":
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        s.record()
        for _ in range(reps):
            fn()
        e.record()
        torch.cuda.synchronize()
        return s.elapsed_time(e) / reps
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) * 1e3 / reps


def gemm(dtype, n, tf32):
    if dev == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    ms = timed(lambda: a @ b, 20 if dev == "cuda" else 3)
    row = {"dtype": str(dtype).replace("torch.", ""), "tf32": tf32, "n": n, "ms": ms, "tflops": 2 * n**3 / ms / 1e9}
    out["gemm"].append(row)
    print(f"torch {row['dtype']} tf32={tf32} n={n}: {ms:.3f} ms, {row['tflops']:.1f} TFLOP/s", flush=True)


sizes = [128, 256] if DRY else [1024, 2048, 4096, 8192]
for n in sizes:
    gemm(torch.float32, n, False)
for n in sizes[-2:]:
    gemm(torch.float32, n, True)
for n in sizes:
    gemm(torch.bfloat16, n, False)
if dev == "cuda":
    x = torch.empty(2**31, dtype=torch.uint8, device=dev)
    y = torch.empty_like(x)
    ms = timed(lambda: y.copy_(x), 10)
    out["copyGBs"] = 2 * 2**31 / ms / 1e6
    print(f"D2D copy 2 GiB: {out['copyGBs']:.0f} GB/s (read + write)", flush=True)
with open(sys.argv[1], "w") as f:
    json.dump(out, f, indent=1)
