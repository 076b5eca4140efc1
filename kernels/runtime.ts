/**
 * The WebGPU execution engine: a buffer pool, a pipeline cache, and batching of dispatches
 * into one command encoder that is submitted only on a flush (a read-back, a sync, or when
 * the batch grows large). Ops never submit-and-wait.
 */
import { bytesPerElement, typedArrayFor, type DType, type TypedArray } from '../tensor/dtype.js';
import { Storage } from '../tensor/storage.js';
import type { Tensor } from '../tensor/tensor.js';
import { openDevice, type AdapterChoice, type GpuInfo, type OpenedDevice } from './device.js';

const STORAGE_USAGE = 0x80 /* STORAGE */ | 0x04 /* COPY_SRC */ | 0x08; /* COPY_DST */
/** Dispatches per batch before an automatic submit. */
const MAX_DISPATCHES_PER_BATCH = 512;
const UNIFORM_ARENA_BYTES = 1 << 16;

/** Size classes: powers of two up to 64 KiB, then quarter-octave steps. */
export function bucketSize(bytes: number): number {
  const b = Math.max(bytes, 16);
  if (b <= 65536) return 2 ** Math.ceil(Math.log2(b));
  const step = 2 ** (Math.floor(Math.log2(b)) - 2);
  return Math.ceil(b / step) * step;
}

export class GpuStorage extends Storage {
  constructor(
    private readonly ctx: GpuContext,
    dtype: DType,
    numel: number,
    readonly buffer: GPUBuffer,
  ) {
    super('webgpu', dtype, numel, bytesPerElement(dtype));
  }
  protected free(): void {
    this.ctx.releaseBuffer(this.buffer);
  }
}

interface PipelineEntry {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
}

export interface DispatchArgs {
  /** For error messages and profiling. */
  label: string;
  /** WGSL: uniforms (if any) at @binding(0), then the storage buffers at 1, 2, ... in order. */
  code: string;
  uniforms?: ArrayBuffer;
  buffers: GPUBuffer[];
  workgroups: readonly [number, number?, number?];
  entryPoint?: string;
}

export class GpuContext {
  readonly device: GPUDevice;
  readonly info: GpuInfo;
  private gpu: GPU | null;
  private pool = new Map<number, GPUBuffer[]>();
  /** Buffers released since the last submit: reusable by kernels, not yet by uploads. */
  private recent = new Map<number, GPUBuffer[]>();
  private pipelines = new Map<string, PipelineEntry>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private dispatches = 0;
  private arena: GPUBuffer;
  private arenaHost = new Uint8Array(UNIFORM_ARENA_BYTES);
  private arenaUsed = 0;
  private readonly uniformAlign: number;
  private errors: string[] = [];
  /** Count of submits, for tests and profiling. */
  submits = 0;
  /**
   * Opt-in profiling hook (bench/lab/timing.ts): when set, every compute pass the runtime
   * begins asks it for timestamp writes. Null in normal use.
   */
  passTimestamps: (() => GPUComputePassTimestampWrites | undefined) | null = null;
  pooledBytes = 0;

  constructor(opened: OpenedDevice) {
    this.device = opened.device;
    this.info = opened.info;
    this.gpu = opened.gpu;
    this.uniformAlign = this.device.limits.minUniformBufferOffsetAlignment;
    this.arena = this.device.createBuffer({ size: UNIFORM_ARENA_BYTES, usage: 0x40 /* UNIFORM */ | 0x08 });
    this.device.addEventListener('uncapturederror', (ev) => {
      this.errors.push((ev as GPUUncapturedErrorEvent).error.message);
    });
  }

  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  // ---- buffers ----------------------------------------------------------------------

  private takeFrom(map: Map<number, GPUBuffer[]>, size: number): GPUBuffer | undefined {
    const list = map.get(size);
    const b = list?.pop();
    if (b) this.pooledBytes -= size;
    return b;
  }

  /** A storage buffer of at least `bytes`; `forUpload` avoids buffers still read by the open batch. */
  acquireBuffer(bytes: number, forUpload = false): GPUBuffer {
    const size = bucketSize(bytes);
    if (size > this.device.limits.maxBufferSize) {
      throw new Error(`webgpu: a buffer of ${bytes} bytes exceeds the device's maxBufferSize ${this.device.limits.maxBufferSize}`);
    }
    const reused = this.takeFrom(this.pool, size) ?? (forUpload ? undefined : this.takeFrom(this.recent, size));
    return reused ?? this.device.createBuffer({ size, usage: STORAGE_USAGE });
  }

  releaseBuffer(buffer: GPUBuffer): void {
    if (!this.gpu) return; // after shutdown
    const size = buffer.size;
    const map = this.encoder ? this.recent : this.pool;
    let list = map.get(size);
    if (!list) map.set(size, (list = []));
    list.push(buffer);
    this.pooledBytes += size;
  }

  /** Frees every pooled buffer (live tensors keep theirs). */
  trimPool(): void {
    for (const map of [this.pool, this.recent]) {
      for (const list of map.values()) for (const b of list) b.destroy();
      map.clear();
    }
    this.pooledBytes = 0;
  }

  alloc(numel: number, dtype: DType): GpuStorage {
    if (dtype === 'float64') throw new Error('webgpu: float64 is CPU-only; cast to float32');
    return new GpuStorage(this, dtype, numel, this.acquireBuffer(numel * 4));
  }

  upload(data: TypedArray, dtype: DType): GpuStorage {
    if (dtype === 'float64') throw new Error('webgpu: float64 is CPU-only; cast to float32');
    const arr = data instanceof (dtype === 'int32' ? Int32Array : Float32Array) ? data : convert(data, dtype);
    const buffer = this.acquireBuffer(arr.byteLength, true);
    if (arr.byteLength > 0) {
      this.device.queue.writeBuffer(buffer, 0, arr.buffer, arr.byteOffset, Math.ceil(arr.byteLength / 4) * 4);
    }
    return new GpuStorage(this, dtype, arr.length, buffer);
  }

  // ---- pipelines and dispatch -------------------------------------------------------

  pipeline(code: string, entryPoint = 'main'): PipelineEntry {
    const key = `${entryPoint}\n${code}`;
    let entry = this.pipelines.get(key);
    if (!entry) {
      const module = this.device.createShaderModule({ code });
      const pipeline = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint } });
      entry = { pipeline, layout: pipeline.getBindGroupLayout(0) };
      this.pipelines.set(key, entry);
    }
    return entry;
  }

  get pipelineCount(): number {
    return this.pipelines.size;
  }

  private ensurePass(): GPUComputePassEncoder {
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    if (!this.pass) {
      const timestampWrites = this.passTimestamps?.();
      this.pass = this.encoder.beginComputePass(timestampWrites ? { timestampWrites } : undefined);
    }
    return this.pass;
  }

  /** The open encoder with no compute pass running (for buffer copies). */
  private ensureEncoderForCopy(): GPUCommandEncoder {
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    return this.encoder;
  }

  /** Queues one compute dispatch; nothing runs until the next flush. */
  dispatch(args: DispatchArgs): void {
    const [x, y = 1, z = 1] = args.workgroups;
    if (x === 0 || y === 0 || z === 0) return;
    const maxWg = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (x > maxWg || y > maxWg || z > maxWg) {
      throw new Error(`${args.label}: ${x}x${y}x${z} workgroups exceed the limit ${maxWg} per dimension`);
    }
    const { pipeline, layout } = this.pipeline(args.code, args.entryPoint);
    const entries: GPUBindGroupEntry[] = [];
    if (args.uniforms) {
      const size = Math.ceil(args.uniforms.byteLength / 16) * 16;
      if (this.arenaUsed + size > UNIFORM_ARENA_BYTES) this.flush();
      this.arenaHost.set(new Uint8Array(args.uniforms), this.arenaUsed);
      entries.push({ binding: 0, resource: { buffer: this.arena, offset: this.arenaUsed, size } });
      this.arenaUsed += Math.ceil(size / this.uniformAlign) * this.uniformAlign;
    }
    const maxBinding = this.device.limits.maxStorageBufferBindingSize;
    args.buffers.forEach((buffer, i) => {
      if (buffer.size > maxBinding) {
        throw new Error(`${args.label}: input/output ${i} needs a storage binding of ${buffer.size} bytes, over this adapter's maxStorageBufferBindingSize ${maxBinding} (split the tensor, e.g. a large weight into row blocks)`);
      }
      entries.push({ binding: i + 1, resource: { buffer } });
    });
    const bindGroup = this.device.createBindGroup({ layout, entries, label: args.label });
    const pass = this.ensurePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
    if (++this.dispatches >= MAX_DISPATCHES_PER_BATCH) this.flush();
  }

  /** Queues a buffer-to-buffer copy in order with the dispatches. */
  copyBuffer(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.ensureEncoderForCopy().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  /** Submits everything queued. Released buffers become reusable by uploads afterwards. */
  flush(): void {
    if (this.encoder) {
      if (this.pass) this.pass.end();
      this.pass = null;
      if (this.arenaUsed > 0) this.device.queue.writeBuffer(this.arena, 0, this.arenaHost.buffer, 0, this.arenaUsed);
      this.device.queue.submit([this.encoder.finish()]);
      this.submits++;
      this.encoder = null;
      this.dispatches = 0;
      this.arenaUsed = 0;
      // The arena was consumed by this submit; later writes are ordered after it.
    }
    for (const [size, list] of this.recent) {
      let dst = this.pool.get(size);
      if (!dst) this.pool.set(size, (dst = []));
      dst.push(...list);
    }
    this.recent.clear();
    this.throwErrors();
  }

  private throwErrors(): void {
    if (this.errors.length) {
      const msg = this.errors.join('\n');
      this.errors = [];
      throw new Error(`webgpu: ${msg}`);
    }
  }

  /** Flushes and reads `bytes` from `buffer` at `offset`. */
  async readBuffer(buffer: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    const size = Math.max(4, Math.ceil(bytes / 4) * 4);
    const staging = this.device.createBuffer({ size, usage: 0x01 /* MAP_READ */ | 0x08 });
    this.ensureEncoderForCopy().copyBufferToBuffer(buffer, offset, staging, 0, size);
    this.flush();
    await staging.mapAsync(0x01 /* GPUMapMode.READ */);
    const out = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    staging.destroy();
    this.throwErrors();
    return out;
  }

  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.throwErrors();
  }

  destroy(): void {
    if (!this.gpu) return;
    this.trimPool();
    this.arena.destroy();
    this.pipelines.clear();
    this.device.destroy();
    this.gpu = null;
  }
}

function convert(data: TypedArray, dtype: DType): TypedArray {
  const out = typedArrayFor(dtype, data.length);
  if (dtype === 'int32') for (let i = 0; i < data.length; i++) out[i] = Math.trunc(data[i]);
  else out.set(data);
  return out;
}

let context: GpuContext | null = null;

export async function createContext(order?: readonly AdapterChoice[]): Promise<GpuContext> {
  context = new GpuContext(await openDevice(order));
  return context;
}

export function ctx(): GpuContext {
  if (!context) throw new Error('webgpu backend not initialised: call `await initWebGPU()` first');
  return context;
}

export function destroyContext(): void {
  context?.destroy();
  context = null;
}

/** The GPU buffer behind a webgpu tensor. */
export function bufferOf(t: Tensor): GPUBuffer {
  return (t.storage as GpuStorage).buffer;
}
