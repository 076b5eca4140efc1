import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { gpuContext, gpuInfo } from '../../kernels/index.js';
import { bucketSize } from '../../kernels/runtime.js';
import * as uhd from '../../tensor/index.js';
import { useWebGPU } from '../support.js';

useWebGPU();

describe('webgpu runtime', () => {
  it('reports the adapter it chose and requests real limits', () => {
    const info = gpuInfo();
    expect(info.backend).toMatch(/vulkan|opengles|opengl/);
    expect(info.limits.maxComputeInvocationsPerWorkgroup).toBeGreaterThanOrEqual(256);
    expect(info.limits.maxStorageBufferBindingSize).toBeGreaterThan(128 * 2 ** 20 - 1);
  });

  it('batches many ops into few submits (no submit per op)', async () => {
    const c = gpuContext();
    const x = uhd.randn([64, 64], { device: 'webgpu' });
    await x.data();
    const before = c.submits;
    let y = x;
    for (let i = 0; i < 50; i++) {
      const next = y.mul(1.01).add(0.5).tanh();
      if (y !== x) y.dispose();
      y = next;
    }
    await y.data();
    // one submit for the read-back (plus none per op)
    expect(c.submits - before).toBeLessThanOrEqual(2);
  });

  it('reuses pooled buffers: a loop of ops holds memory flat', async () => {
    const w = uhd.randn([128, 128], { device: 'webgpu' });
    const step = () =>
      uhd.tidy(() => {
        const a = w.matmul(w.transpose()).div(128).softmax(-1);
        const b = uhd.layerNorm(a.add(w), null, null, 1e-5);
        return b.sum();
      });
    const warm = step();
    await warm.data();
    warm.dispose();
    const before = uhd.memory().webgpu;
    const pooledBefore = gpuContext().pooledBytes;
    for (let i = 0; i < 100; i++) {
      const s = step();
      if (i % 10 === 0) await s.data();
      s.dispose();
    }
    await uhd.getBackend('webgpu').sync();
    const after = uhd.memory().webgpu;
    expect(after).toEqual(before);
    // the pool holds what the loop needs once, not a hundred times
    expect(gpuContext().pooledBytes).toBeLessThanOrEqual(pooledBefore + 4 * 128 * 128 * 4 * 4);
  });

  it('asks the opt-in passTimestamps hook once per compute pass it begins, and never when unset', async () => {
    const c = gpuContext();
    const x = uhd.randn([256], { device: 'webgpu' });
    await x.data();
    let asked = 0;
    c.passTimestamps = () => {
      asked++;
      return undefined; // no timestamp-query on every adapter: a pass without timestamp writes
    };
    try {
      const a = x.mul(2);
      const b = a.add(1); // same pass
      await b.data(); // a read-back: its copy ends the pass, the flush submits it
      const z = b.exp(); // a new pass
      await z.data();
      expect(asked).toBe(2);
      for (const t of [a, b, z]) t.dispose();
    } finally {
      c.passTimestamps = null;
    }
    x.mul(3).dispose();
    await gpuContext().sync();
    expect(asked).toBe(2);
    x.dispose();
  });

  it('bucketSize rounds up within a quarter octave above 64 KiB', () => {
    expect(bucketSize(1)).toBe(16);
    expect(bucketSize(1000)).toBe(1024);
    expect(bucketSize(65536)).toBe(65536);
    for (const n of [65537, 100_000, 3_000_000, 123_456_789]) {
      const b = bucketSize(n);
      expect(b).toBeGreaterThanOrEqual(n);
      expect(b).toBeLessThanOrEqual(n * 1.25 + 16);
    }
  });

  it('a size the pool lacks takes a free buffer up to four classes larger (above 64 KiB), never a smaller one or one past that', () => {
    const c = gpuContext();
    c.trimPool();
    const MiB = 1 << 20;
    const created = () => c.stats.buffersCreated;
    const release = (b: GPUBuffer) => {
      c.releaseBuffer(b);
      c.flush();
    };
    const free = c.acquireBuffer(2 * MiB); // classes between 1 and 2 MiB: 1.25, 1.5, 1.75, 2
    release(free);
    let n = created();
    const up3 = c.acquireBuffer(MiB + 1); // class 1.25 MiB, none free: the 2 MiB one, 3 classes up, serves
    expect(up3).toBe(free);
    release(up3);
    const up4 = c.acquireBuffer(MiB); // class 1 MiB: 2 MiB is 4 classes up
    expect(up4).toBe(free);
    expect(created()).toBe(n);
    release(up4);
    const up5 = c.acquireBuffer(896 * 1024); // class 896 KiB: 2 MiB is 5 classes up, so a new buffer
    expect(up5).not.toBe(free);
    expect(c.bufferSize(up5)).toBe(896 * 1024);
    expect(created()).toBe(n + 1);
    n = created();
    const larger = c.acquireBuffer(2 * MiB + 1); // a smaller free buffer never serves a larger request
    expect(c.bufferSize(larger)).toBeGreaterThan(2 * MiB);
    expect(created()).toBe(n + 1);
    for (const b of [free, up5, larger]) c.releaseBuffer(b);
    c.flush();
  });

  it('surfaces WGSL errors as exceptions naming the problem', async () => {
    const c = gpuContext();
    const buf = c.acquireBuffer(16);
    c.dispatch({ label: 'broken', code: '@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }', buffers: [], workgroups: [1] });
    await expect(c.sync()).rejects.toThrow(/webgpu: .*(f32|u32|abstract)/);
    c.releaseBuffer(buf);
  });

  it('a buffer over the storage-binding limit is refused by name before Dawn sees it', () => {
    const c = gpuContext();
    const limit = c.device.limits.maxStorageBufferBindingSize;
    expect(limit).toBeLessThan(c.device.limits.maxBufferSize); // llvmpipe: 128 MiB bindings, larger buffers
    const big = c.acquireBuffer(limit + 4);
    expect(() => c.dispatch({ label: 'huge weight', code: '@compute @workgroup_size(1) fn main() {}', buffers: [big], workgroups: [1] }))
      .toThrow(new RegExp(`huge weight: input/output 0 needs a storage binding of \\d+ bytes, over this adapter's maxStorageBufferBindingSize ${limit}`));
    c.releaseBuffer(big);
  });

  it('a repeated dispatch reuses its pipeline and bind group: the WGSL is neither rebuilt nor bound anew', async () => {
    const c = gpuContext();
    const x = uhd.randn([300], { device: 'webgpu' });
    const y = uhd.randn([300], { device: 'webgpu' });
    const step = () => uhd.tidy(() => x.mul(y).add(1).exp().sum());
    for (let i = 0; i < 2; i++) {
      const s = step();
      await s.data();
      s.dispose();
    }
    const before = { ...c.stats };
    const pipelines = c.pipelineCount;
    for (let i = 0; i < 20; i++) {
      const s = step();
      await s.data(); // as a training step reads its loss
      s.dispose();
    }
    expect(c.stats.dispatches - before.dispatches).toBeGreaterThanOrEqual(80);
    expect(c.pipelineCount).toBe(pipelines);
    // the same sizes come back from the pool in the same order, so the same bind groups serve
    expect(c.stats.bindGroupsCreated - before.bindGroupsCreated).toBe(0);
    expect(c.stats.buffersCreated - before.buffersCreated).toBe(0);
    let built = 0;
    const code = () => {
      built++;
      return '@group(0) @binding(1) var<storage, read_write> o: array<f32>;\n@compute @workgroup_size(1) fn main() { o[0] = 7.0; }';
    };
    const out = uhd.zeros([4], { device: 'webgpu' });
    const buffer = (out.storage as unknown as { buffer: GPUBuffer }).buffer;
    for (let i = 0; i < 3; i++) c.dispatch({ label: 'keyed', key: 'test|keyed-seven', code, buffers: [buffer], workgroups: [1] });
    expect(built).toBe(1);
    expect((await out.data())[0]).toBe(7);
    for (const t of [x, y, out]) t.dispose();
  });

  it('a buffer keeps one bind group per access: known buffers in a new combination or another kernel bind anew for free', async () => {
    const c = gpuContext();
    const [x, y, z] = [1, 2, 3].map((v) => uhd.full([64], v, { device: 'webgpu' }));
    const out = uhd.zeros([64], { device: 'webgpu' });
    const add = (a: uhd.Tensor, b: uhd.Tensor) => uhd.tidy(() => uhd.assign(out, uhd.add(a, b)));
    add(x, y); // each buffer read once, out written once; the add's temporary written and read
    add(z, z);
    await c.sync();
    const before = c.stats.bindGroupsCreated;
    add(y, z);
    add(z, x);
    add(x, x);
    await c.sync();
    expect(c.stats.bindGroupsCreated - before).toBe(0);
    // and the values are those of the new combinations (the last one: 1 + 1)
    expect(Array.from(await out.data())).toEqual(new Array(64).fill(2));
    for (const t of [x, y, z, out]) t.dispose();
  });

  it('a kernel given more or fewer buffers than it declares is refused by name', () => {
    const c = gpuContext();
    const buf = c.acquireBuffer(16);
    const code = '@group(0) @binding(1) var<storage, read_write> o: array<f32>;\n@compute @workgroup_size(1) fn main() { o[0] = 1.0; }';
    expect(() => c.dispatch({ label: 'miscounted', code, buffers: [buf, buf], workgroups: [1] })).toThrow(/miscounted: the kernel declares 1 storage bindings but 2 buffers/);
    c.releaseBuffer(buf);
  });

  it('Dawn toggles and extra features pass through initWebGPU and are reported', () => {
    const script = `
      import { initWebGPU, shutdown } from './kernels/index.ts';
      import * as uhd from './tensor/index.ts';
      const info = await initWebGPU({ dawn: { enableToggles: ['allow_unsafe_apis'], features: ['chromium-experimental-subgroup-matrix'] } });
      const x = uhd.ones([4], { device: 'webgpu' });
      console.log(JSON.stringify({ toggles: info.toggles, experimental: info.experimental, offered: info.adapterFeatures.includes('chromium-experimental-subgroup-matrix'), sum: await x.sum().item() }));
      shutdown();`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: process.cwd(), timeout: 60_000, encoding: 'utf8' });
    const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
    expect(line, r.stderr).toBeDefined();
    const got = JSON.parse(line!) as { toggles: string[]; experimental: string[]; offered: boolean; sum: number };
    expect(got.toggles).toEqual(['allow_unsafe_apis']);
    expect(got.sum).toBe(4);
    // opened only where the adapter offers it (llvmpipe does not)
    expect(got.experimental).toEqual(got.offered ? ['chromium-experimental-subgroup-matrix'] : []);
  });

  it('a process that uses the GPU and calls shutdown() exits by itself', () => {
    const script = `
      import { initWebGPU, shutdown } from './kernels/index.ts';
      import * as uhd from './tensor/index.ts';
      await initWebGPU();
      const x = uhd.ones([4], { device: 'webgpu' });
      console.log('sum', await x.sum().item());
      shutdown();`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: process.cwd(),
      timeout: 60_000,
      encoding: 'utf8',
    });
    expect(r.error, String(r.error)).toBeUndefined();
    expect(r.stdout).toContain('sum 4');
    expect(r.status).toBe(0);
  });
});

describe('moving tensors between devices', () => {
  it('seeded random tensors are identical on both devices', async () => {
    uhd.manualSeed(99);
    const a = uhd.randn([1000]);
    uhd.manualSeed(99);
    const b = uhd.randn([1000], { device: 'webgpu' });
    expect(Array.from(await b.data())).toEqual(Array.from(await a.data()));
  });
  it('to() uploads views; toDevice() reads back', async () => {
    const x = uhd.arange(12, undefined, 1, { dtype: 'float32' }).reshape(3, 4).transpose();
    const g = x.to('webgpu');
    expect(g.device).toBe('webgpu');
    expect(await g.toArray()).toEqual(await x.toArray());
    const back = await uhd.toDevice(g.mul(2), 'cpu');
    expect(back.device).toBe('cpu');
    expect(await back.toArray()).toEqual(await x.mul(2).toArray());
    expect(() => g.to('cpu')).toThrow(/to: moving .* needs a read-back; use `await toDevice/);
  });
  it('mixing devices in one op is an error, not a silent copy', () => {
    const a = uhd.ones([2]);
    const b = uhd.ones([2], { device: 'webgpu' });
    expect(() => a.add(b)).toThrow('add: tensors are on different devices (cpu and webgpu); move one with .to()');
  });
  it('float64 stays on the CPU', () => {
    expect(() => uhd.zeros([2], { dtype: 'float64', device: 'webgpu' })).toThrow(/float64 is not a dtype of device 'webgpu'/);
    expect(() => uhd.zeros([2], { dtype: 'float64' }).to('webgpu')).toThrow(/float64 is not a dtype of device 'webgpu'/);
  });
});
