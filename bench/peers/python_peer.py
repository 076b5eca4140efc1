"""The Python peer of bench/peers (run by python.ts with /usr/bin/python3): numpy for the
matmul, softmax and layerNorm cases, torch (CPU) for the transformer block forward and
forward+backward. One JSON request per line on stdin, one JSON reply per line on stdout.

Request: {"work": {...the workload's shapes...}, "dir": path, "timing": {...}}; the inputs are
float32 files in dir (a.bin, b.bin, x.bin, weight.bin, bias.bin, p<i>.bin for the block's
parameters in BLOCK_PARAM_NAMES order). The reply holds the median time of the timed calls,
measured here (no IPC in it), and the outputs written as out<i>.bin.
"""
import json
import os
import sys
import time

import numpy as np


def load(d, name, shape):
    return np.fromfile(os.path.join(d, name), dtype=np.float32).reshape(shape)


def timed(call, t):
    for _ in range(t["warmup"]):
        call()
    ms = []
    start = time.perf_counter()
    while len(ms) < t["maxSamples"] and (len(ms) < t["minSamples"] or time.perf_counter() - start < t["maxTime"]):
        t0 = time.perf_counter()
        call()
        ms.append((time.perf_counter() - t0) * 1e3)
    ms.sort()
    m = len(ms) // 2
    return (ms[m] if len(ms) % 2 else (ms[m - 1] + ms[m]) / 2), len(ms)


def block_fns(w, d):
    import torch
    import torch.nn.functional as F
    S, D, H = w["seq"], w["dim"], w["heads"]
    hd = D // H
    names = w["paramNames"]
    params = {n: torch.from_numpy(load(d, f"p{i}.bin", s)) for i, (n, s) in enumerate(zip(names, w["paramShapes"]))}
    x = torch.from_numpy(load(d, "x.bin", [S, D]))

    def forward(p):
        def linear(t, name):
            return t @ p[name + ".weight"].T + p[name + ".bias"]

        h = F.layer_norm(x, (D,), p["ln1.weight"], p["ln1.bias"], 1e-5)
        q = linear(h, "attn.q_proj").reshape(S, H, hd).transpose(0, 1)
        k = linear(h, "attn.k_proj").reshape(S, H, hd).transpose(0, 1)
        v = linear(h, "attn.v_proj").reshape(S, H, hd).transpose(0, 1)
        probs = torch.softmax(q @ k.transpose(1, 2) / hd ** 0.5, dim=-1)
        o = (probs @ v).transpose(0, 1).reshape(S, D)
        a = x + linear(o, "attn.out_proj")
        hidden = F.gelu(linear(F.layer_norm(a, (D,), p["ln2.weight"], p["ln2.bias"], 1e-5), "mlp.fc1"), approximate="tanh")
        return a + linear(hidden, "mlp.fc2")

    if not w["train"]:
        def call():
            with torch.no_grad():
                return [forward(params)]
        return call

    def call():
        p = {n: t.clone().requires_grad_() for n, t in params.items()}
        y = forward(p)
        y.sum().backward()
        return [y.detach()] + [p[n].grad for n in names]
    return call


def handle(req):
    w, d = req["work"], req["dir"]
    kind = w["kind"]
    if kind == "matmul":
        a, b = load(d, "a.bin", [w["n"], w["n"]]), load(d, "b.bin", [w["n"], w["n"]])
        call = lambda: [a @ b]
    elif kind == "softmax":
        x = load(d, "x.bin", [w["rows"], w["cols"]])

        def call():
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            return [e / e.sum(axis=-1, keepdims=True)]
    elif kind == "layerNorm":
        x = load(d, "x.bin", [w["rows"], w["cols"]])
        g, b = load(d, "weight.bin", [w["cols"]]), load(d, "bias.bin", [w["cols"]])

        def call():
            m = x.mean(axis=-1, keepdims=True)
            v = ((x - m) ** 2).mean(axis=-1, keepdims=True)
            return [(x - m) / np.sqrt(v + 1e-5) * g + b]
    elif kind == "block":
        call = block_fns(w, d)
    else:
        raise ValueError("unknown workload " + kind)
    outs = call()
    paths = []
    for i, o in enumerate(outs):
        path = os.path.join(d, f"out{i}.bin")
        np.asarray(o, dtype=np.float32).tofile(path)
        paths.append(path)
    median, samples = timed(call, req["timing"])
    return {"ok": True, "medianMs": median, "samples": samples, "outputs": paths}


def describe():
    import torch
    blas = os.path.realpath("/etc/alternatives/libblas.so.3-x86_64-linux-gnu") if os.path.exists("/etc/alternatives/libblas.so.3-x86_64-linux-gnu") else "unknown"
    return {"ok": True, "numpy": np.__version__, "torch": torch.__version__.split("+")[0], "torchThreads": torch.get_num_threads(), "blas": blas}


for line in sys.stdin:
    try:
        req = json.loads(line)
        reply = describe() if req.get("describe") else handle(req)
    except Exception as e:  # the runner turns this into a 'failed' row
        reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
