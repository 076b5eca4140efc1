import { describe, expect, it } from 'vitest';
import * as nn from '../../nn/index.js';
import * as uhd from '../../tensor/index.js';
import { loadModel } from '../../llava-uhd/load.js';
import { expectClose, useWebGPU } from '../support.js';

useWebGPU();

describe('Module.to', () => {
  it('moves every parameter to WebGPU, updates the fields that hold them, and frees the CPU copies', async () => {
    uhd.manualSeed(1);
    const m = new nn.MLP(8, 16);
    const x = uhd.randn([3, 8]);
    const y = uhd.tidy(() => m.forward(x));
    const want = await y.data();
    y.dispose(); // frees the recorded graph, which held the weights
    const cpuBefore = uhd.memory().cpu.storages;
    await m.to('webgpu');
    expect(m.parameters().every((p) => p.device === 'webgpu' && p.requiresGrad)).toBe(true);
    expect(m.fc1.weight.device).toBe('webgpu'); // the field follows the move
    expect(uhd.memory().cpu.storages).toBe(cpuBefore - 4);
    const got = await m.forward(x.to('webgpu')).data();
    expectClose(got, want);
    await m.to('cpu');
    expect(m.fc2.bias!.device).toBe('cpu');
    m.dispose();
  });
});

describe('loadModel', () => {
  it('refuses to run without weights unless a random init is asked for', async () => {
    await expect(loadModel({ config: 'tiny' })).rejects.toThrow('no --weights given: pass a safetensors file or folder, or --random-init');
    const { model, tok } = await loadModel({ config: 'tiny', randomInit: true });
    expect(tok.vocabSize).toBeLessThanOrEqual(model.config.text_config.vocab_size);
    model.dispose();
    await expect(loadModel({ config: 'nope', randomInit: true })).rejects.toThrow("config: 'nope' is neither a named config");
  });
});
