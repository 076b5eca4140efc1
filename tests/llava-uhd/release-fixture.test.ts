/**
 * A checkpoint folder written by PyTorch in the release's layout (tests/fixtures/release-layout,
 * made by make_fixture.py there: the release's module tree, bf16 shards, MiniCPM-V config.json)
 * loads here without a config, computes what PyTorch computed, and saves back bit for bit.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import * as ag from '../../autograd/index.js';
import { loadShardedSafetensors, loadSafetensors } from '../../nn/safetensors.js';
import * as uhd from '../../tensor/index.js';
import { saveCheckpointFolder } from '../../llava-uhd/checkpoint-folder.js';
import { loadModel } from '../../llava-uhd/load.js';
import { expectClose } from '../support.js';
import { Compressor } from '../../llava-uhd/compressor.js';

const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'release-layout');
const expected = JSON.parse(readFileSync(join(FIXTURE, 'expected.json'), 'utf8')) as {
  names: Record<string, number[]>;
  features: number[];
  features_shape: number[];
  ids: number[];
  logits: number[];
  logits_shape: number[];
};
const out = mkdtempSync(join(tmpdir(), 'uhd-release-fixture-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

describe('a release-layout folder written by PyTorch', () => {
  it('loads without a config: every name and shape PyTorch has, no more', async () => {
    const { model, config, checkpoint } = await loadModel({ weights: FIXTURE });
    expect(config.insert_layer_id).toBe(0);
    expect(config.vision_config.position_embedding_side).toBe(4); // 56 / 14, not the top-level image_size 448
    expect(checkpoint?.config?.torchDType).toBe('bfloat16');
    const ours = Object.fromEntries([...model.stateDict()].map(([k, t]) => [k, t.shape]));
    expect(ours).toEqual(expected.names);
  });

  it('computes the vision features and LLM logits PyTorch computed (float32 from the bf16 weights)', async () => {
    const { model } = await loadModel({ weights: FIXTURE });
    const px = new Float32Array(3 * 56 * 112);
    for (let c = 0; c < 3; c++) for (let y = 0; y < 56; y++) for (let x = 0; x < 112; x++) px[(c * 56 + y) * 112 + x] = ((c * 7 + y * 3 + x * 5) % 17) / 8 - 1;
    const features = ag.noGrad(() => model.encodeViews([uhd.tensor(px, { shape: [3, 56, 112] })]).features);
    expect(features.shape).toEqual([1, ...expected.features_shape]);
    expectClose(await features.data(), expected.features, { atol: 2e-5, rtol: 1e-4 }, 'features');
    const ids = uhd.tensor([expected.ids], { dtype: 'int32' });
    const logits = ag.noGrad(() => model.llm.forward(ids));
    expect(logits.shape).toEqual([1, ...expected.logits_shape]);
    expectClose(await logits.data(), expected.logits, { atol: 2e-5, rtol: 1e-4 }, 'logits');
  });

  it('saves back in bf16 bit for bit, the unused vit_merger.mlp / layer_norm2 (here not equal to layer k) included', async () => {
    const { model } = await loadModel({ weights: FIXTURE });
    const k = model.vpm.encoder.layers[0];
    expect(Array.from(await (model.vit_merger as Compressor).mlp.fc1.weight.data())).not.toEqual(Array.from(await k.mlp.fc1.weight.data()));
    await saveCheckpointFolder(model, out, { dtype: 'BF16' });
    const [a, b] = [await loadShardedSafetensors(FIXTURE), await loadSafetensors(join(out, 'model.safetensors'))];
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    for (const [name, t] of a) expect(Array.from(await b.get(name)!.data()), name).toEqual(Array.from(await t.data()));
  });
});
