/**
 * The GPU benchmark's dry run (DRY=1 bash bench/gpu/run.sh): the script that will run on a real
 * GPU, end to end here (bundle, PyTorch reference on the CPU, every section at tiny sizes on
 * llvmpipe), so that the day a GPU is lent the run does not fail on a typo.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';

it('DRY=1 bench/gpu/run.sh runs every section and writes gpu-dry.{md,json} with checked numbers', () => {
  const out = mkdtempSync(join(tmpdir(), 'uhd-gpu-dry-'));
  try {
    const r = spawnSync('bash', ['bench/gpu/run.sh'], { env: { ...process.env, DRY: '1', OUT: out }, encoding: 'utf8', timeout: 170_000 });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    for (const f of ['gpu-dry.json', 'gpu-dry.md', 'nvidia-smi.txt', 'bench.log']) expect(existsSync(join(out, f)), f).toBe(true);
    const rep = JSON.parse(readFileSync(join(out, 'gpu-dry.json'), 'utf8')) as { meta: Record<string, unknown>; sections: Record<string, Record<string, unknown>[] | Record<string, unknown>> };
    const sections = rep.sections;
    for (const name of ['matmul', 'host cost per dispatch', 'attention at the ViT shapes', 'ViT encode, D vs baseline', 'Qwen3-8B-shaped LLM, bf16 weights', 'subgroup reduction check']) {
      const rows = sections[name] as Record<string, unknown>[];
      expect(rows, name).toBeDefined();
      expect(rows.length, name).toBeGreaterThan(0);
      for (const row of rows) {
        expect(row.error, `${name}: ${row.error}`).toBeUndefined();
        if (name !== 'host cost per dispatch') expect(row.skipped, `${name} skipped`).toBeUndefined();
      }
    }
    const matmul = sections.matmul as { weights: string; maxRelErr: number; gflopsWall: number }[];
    expect(new Set(matmul.map((m) => m.weights))).toEqual(new Set(['float32', 'bfloat16']));
    for (const m of matmul) {
      expect(m.maxRelErr).toBeLessThan(1e-5);
      expect(m.gflopsWall).toBeGreaterThan(0);
    }
    const vit = sections['ViT encode, D vs baseline'] as { flopsRatio?: number; measuredRatio?: number }[];
    const ratios = vit.filter((v) => v.flopsRatio !== undefined);
    expect(ratios.length).toBe(2);
    for (const v of ratios) expect(v.flopsRatio).toBeGreaterThan(1);
    const llm = sections['Qwen3-8B-shaped LLM, bf16 weights'] as { prefillTokensPerS: number; decodeTokensPerS: number }[];
    expect(llm[0].prefillTokensPerS).toBeGreaterThan(0);
    expect(llm[0].decodeTokensPerS).toBeGreaterThan(0);
    // PyTorch's reference ran (on the CPU here) and its numbers are in the report, or, where this
    // machine has no torch (CI needs no Python), the report says it did not run
    const torch = sections['pytorch (same card)'] as { gemm?: { dtype: string; tflops: number }[]; skipped?: string };
    const python = process.env.PYTHON ?? '/usr/bin/python3';
    const hasTorch = spawnSync(python, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
    if (hasTorch) expect(torch.gemm!.map((g) => g.dtype)).toContain('bfloat16');
    else expect(torch.skipped).toMatch(/did not run/);
    expect(readFileSync(join(out, 'gpu-dry.md'), 'utf8')).toContain('## ViT encode, D vs baseline');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}, 180_000);
