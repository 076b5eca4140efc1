/**
 * The WebGPU execution engine: a buffer pool, a pipeline cache, and batching of dispatches
 * into one command encoder that is submitted only on a flush (a read-back, a sync, or when
 * the batch grows large). Ops never submit-and-wait.
 */
import { bytesPerElement, encodeHalf, isHalf, typedArrayFor, type DType, type HalfDType, type TypedArray } from '../tensor/dtype.js';
import { halfBytes, packHalfBits } from './half.js';
import { Storage } from '../tensor/storage.js';
import type { Tensor } from '../tensor/tensor.js';
import { openDevice, type AdapterChoice, type DawnOptions, type GpuInfo, type OpenedDevice } from './device.js';

const STORAGE_USAGE = 0x80 /* STORAGE */ | 0x04 /* COPY_SRC */ | 0x08; /* COPY_DST */
/** Dispatches per batch before an automatic submit. */
const MAX_DISPATCHES_PER_BATCH = 512;
const UNIFORM_ARENA_BYTES = 1 << 18;
/**
 * The uniform binding of a kernel whose shared group holds nothing else: a fixed window of the
 * arena, one bind group per arena offset, so its setBindGroup needs no dynamic offset (which
 * costs Dawn twice a plain one). Larger uniform blocks take the dynamic offset.
 */
const UNIFORM_SLOT_BYTES = 256;
/** Size classes above a request's that the pool may hand out instead of making a buffer (see acquireBuffer). */
const LARGER_CLASSES = 4;

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

/** One compiled pipeline and what a dispatch of it needs to bind. */
interface PipelineEntry {
  /** Small integer naming the pipeline in bind-group cache keys. */
  id: number;
  pipeline: GPUComputePipeline;
  /**
   * The layout of the group after the solo ones (at index `ownGroups`): the uniforms and the
   * storage bindings past the solo ones; null when the kernel has neither.
   */
  layout: GPUBindGroupLayout | null;
  /** Storage bindings declared by the WGSL (at 1, 2, ...). */
  storageBindings: number;
  /** Per storage binding (index 0 = @binding(1)): whether the kernel writes it. */
  writable: boolean[];
  /** The first `ownGroups` storage bindings each sit alone in a group: binding k in group k - 1 (see `pipeline`). */
  ownGroups: number;
  hasUniforms: boolean;
  /**
   * The shared group holds only uniforms of at most UNIFORM_SLOT_BYTES (most kernels): it is then
   * one of the arena's slot groups (`uniformSlot`), set without a dynamic offset.
   */
  uniformSlots: boolean;
}

/**
 * A buffer's id and size (read once: GPUBuffer.size crosses into Dawn) and its one-binding bind
 * groups, one per access, made the first time the buffer is bound alone in a group.
 */
interface BufferInfo {
  id: number;
  size: number;
  read: GPUBindGroup | null;
  write: GPUBindGroup | null;
  /** The same for byte ranges of it (windows of a tensor larger than one binding), by offset/size/access. */
  ranges: Map<string, GPUBindGroup> | null;
}

export interface DispatchArgs {
  /** For error messages and profiling. */
  label: string;
  /**
   * WGSL: uniforms (if any) at @binding(0), then the storage buffers at 1, 2, ... in order.
   * A function is called only when `key` names a pipeline not compiled yet.
   */
  code: string | (() => string);
  /**
   * Names the WGSL in the pipeline cache (kernel family and specialisation, e.g. 'add|f32|r2').
   * Without it the code string itself is the key. With it, a repeated dispatch neither builds
   * nor hashes the WGSL.
   */
  key?: string;
  /** The uniform bytes; a Uint32Array (a plan's words, reused from call to call) is copied without allocating. */
  uniforms?: ArrayBuffer | Uint32Array;
  /** Whole buffers, or byte ranges of them (a window of a tensor larger than one binding). */
  buffers: readonly BufferBinding[];
  workgroups: readonly [number, number?, number?];
  entryPoint?: string;
}

/** A byte range of a buffer, bound as one storage binding (offset aligned to minStorageBufferOffsetAlignment). */
export interface BufferRange {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}
export type BufferBinding = GPUBuffer | BufferRange;

/** The range when `b` is one, else null (a whole buffer). */
function asRange(b: BufferBinding): BufferRange | null {
  return (b as BufferRange).buffer !== undefined ? (b as BufferRange) : null;
}

/** `var<storage, read>` / `read_write` declarations at @binding(n), for the explicit layouts. */
const BINDING_RE = /@binding\((\d+)\)\s*var<\s*(uniform|storage)\s*(?:,\s*(read_write|read)\s*)?>/g;

/**
 * Where a buffer keeps what the runtime knows of it (BufferInfo), as a property of the GPUBuffer
 * object itself: read several times per dispatch, and a property is cheaper than a WeakMap lookup.
 */
const BUFFER_INFO = Symbol('uhd.bufferInfo');

/** Bind groups cached at most (cleared when full, and whenever a pooled buffer is destroyed). */
const MAX_BIND_GROUPS = 8192;

/** One level of the bind-group cache: the next number of the key, and the group where a key ends. */
class BindGroupNode {
  next: Map<number, BindGroupNode> | null = null;
  group: GPUBindGroup | null = null;
}

/** The child of `node` under `k` (made when missing). */
function step(node: BindGroupNode, k: number): BindGroupNode {
  const next = (node.next ??= new Map());
  let child = next.get(k);
  if (!child) next.set(k, (child = new BindGroupNode()));
  return child;
}

/** Counters for benchmarks and tests (cheap: integers and two clock reads per submit). */
export interface GpuStats {
  dispatches: number;
  /** Buffer-to-buffer copies queued (read-backs' staging copies included). */
  copies: number;
  submits: number;
  /** Milliseconds spent inside queue.submit (on Dawn's GL backend the kernels run there). */
  submitMs: number;
  /** Milliseconds awaiting read-backs and syncs after their flush. */
  waitMs: number;
  /** Bind groups created (cache misses) and GPU buffers created (pool misses). */
  bindGroupsCreated: number;
  buffersCreated: number;
  /** Dispatches and copies per label, when `countLabels` is on (bench/host-cost). */
  byLabel: Map<string, number> | null;
}

/**
 * Runtime switches (all on by default). Benchmarks turn them off to measure what they save in
 * one interleaved run; tests turn them off to check the fused kernels against the plain ops.
 */
export interface GpuTuning {
  /** Offer fused ops (matmul epilogues, multi-tensor AdamW); off: the front ends compose plain ops. */
  fused: boolean;
  /** Reuse bind groups for repeated (pipeline, buffers) combinations. */
  cacheBindGroups: boolean;
  /**
   * Index kernels (gather, scatterAdd) record an out-of-range index, and the next read-back or
   * sync throws naming it, as the CPU does at once. Off by default (it adds a binding and a
   * small read-back per sync); on when UHD_CHECK_INDICES=1, and in the tests.
   */
  checkIndices: boolean;
  /** Use subgroup operations where the device has `subgroups` (reductions whose workgroup is one row). */
  subgroups: boolean;
}

export class GpuContext {
  readonly device: GPUDevice;
  readonly info: GpuInfo;
  private gpu: GPU | null;
  private pool = new Map<number, GPUBuffer[]>();
  /** Buffers released since the last submit: reusable by kernels, not yet by uploads. */
  private recent = new Map<number, GPUBuffer[]>();
  private pipelines = new Map<string, PipelineEntry>();
  private bindGroupRoot = new BindGroupNode();
  private bindGroupCount = 0;
  private nextBufferId = 1;
  /** The pipeline last set on the open pass (a repeat needs no setPipeline). */
  private passPipeline: GPUComputePipeline | null = null;
  /** The solo bind groups last set on the open pass at 0, 1, ... (a repeat needs no setBindGroup). */
  private passGroups: (GPUBindGroup | null)[] = [];
  private readonly dynamicOffset = new Uint32Array(1);
  /**
   * Storage bindings that get a bind group of their own (groups 0..n-1; group n holds the
   * uniforms and any further bindings): maxBindGroups - 1, at most 3.
   */
  private readonly ownGroupCount: number;
  /**
   * How many storage bindings of a kernel (its first ones) get a bind group each, made once per
   * buffer: kernels put there the buffers that change from call to call (activations,
   * gradients), so that the group holding the rest (weights, optimizer state) stays the same.
   */
  get soloBindings(): number {
    return this.ownGroupCount;
  }
  /** The layouts of a one-binding group: read-only and read-write storage at @binding(0). */
  private readonly soloLayouts: { read: GPUBindGroupLayout; write: GPUBindGroupLayout };
  /** The layout of a uniform slot: UNIFORM_SLOT_BYTES of the arena at @binding(0), no dynamic offset. */
  private readonly uniformSlotLayout: GPUBindGroupLayout;
  /** Slot bind groups by arena offset / uniformAlign. */
  private readonly slotGroups: GPUBindGroup[] = [];
  private readonly maxWorkgroups: number;
  private readonly maxBinding: number;
  /**
   * The largest storage binding kernels may use: the adapter's maxStorageBufferBindingSize,
   * or lower when set (tests lower it to exercise the kernels that split a large tensor into
   * several bindings). Values above the adapter's are clamped.
   */
  get bindingLimit(): number {
    return this.bindingLimitSet ?? this.maxBinding;
  }
  set bindingLimit(bytes: number | null) {
    if (bytes !== null && !(Number.isInteger(bytes) && bytes >= 256)) throw new Error(`webgpu: bindingLimit must be an integer >= 256 bytes, got ${bytes}`);
    this.bindingLimitSet = bytes === null ? null : Math.min(bytes, this.maxBinding);
  }
  private bindingLimitSet: number | null = null;
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private dispatches = 0;
  private arena: GPUBuffer;
  private arenaHost = new Uint8Array(UNIFORM_ARENA_BYTES);
  private arenaWords = new Uint32Array(this.arenaHost.buffer);
  private arenaUsed = 0;
  private readonly uniformAlign: number;
  private errors: string[] = [];
  readonly tuning: GpuTuning = { fused: true, cacheBindGroups: true, checkIndices: process.env.UHD_CHECK_INDICES === '1', subgroups: true };
  readonly stats: GpuStats = { dispatches: 0, copies: 0, submits: 0, submitMs: 0, waitMs: 0, bindGroupsCreated: 0, buffersCreated: 0, byLabel: null };
  /** Count of submits, for tests and profiling. */
  get submits(): number {
    return this.stats.submits;
  }
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
    const limits: Record<string, number> = {};
    for (const k in this.device.limits) limits[k] = (this.device.limits as unknown as Record<string, number>)[k];
    this.limitsCopy = Object.freeze(limits) as unknown as GPUSupportedLimits;
    this.featureSet = new Set([...this.device.features]);
    this.uniformAlign = this.device.limits.minUniformBufferOffsetAlignment;
    this.maxWorkgroups = this.device.limits.maxComputeWorkgroupsPerDimension;
    this.maxBinding = this.device.limits.maxStorageBufferBindingSize;
    this.arena = this.device.createBuffer({ size: UNIFORM_ARENA_BYTES, usage: 0x40 /* UNIFORM */ | 0x08 });
    this.ownGroupCount = Math.max(0, Math.min(3, this.device.limits.maxBindGroups - 1));
    const solo = (type: GPUBufferBindingType) => this.device.createBindGroupLayout({ entries: [{ binding: 0, visibility: 4 /* COMPUTE */, buffer: { type } }] });
    this.soloLayouts = { read: solo('read-only-storage'), write: solo('storage') };
    this.uniformSlotLayout = this.device.createBindGroupLayout({ entries: [{ binding: 0, visibility: 4, buffer: { type: 'uniform' } }] });
    this.device.addEventListener('uncapturederror', (ev) => {
      this.errors.push((ev as GPUUncapturedErrorEvent).error.message);
    });
  }

  /** The device's limits as a plain object (reading GPUSupportedLimits crosses into Dawn each time). */
  get limits(): GPUSupportedLimits {
    return this.limitsCopy;
  }
  private readonly limitsCopy: GPUSupportedLimits;

  /** Whether the device was opened with `feature` (cached: the setlike lookup crosses into Dawn). */
  hasFeature(feature: string): boolean {
    return this.featureSet.has(feature);
  }
  private readonly featureSet: ReadonlySet<string>;

  // ---- buffers ----------------------------------------------------------------------

  private takeFrom(map: Map<number, GPUBuffer[]>, size: number): GPUBuffer | undefined {
    const list = map.get(size);
    const b = list?.pop();
    if (b) this.pooledBytes -= size;
    return b;
  }

  /** A free buffer of exactly `size` bytes, if any; `forUpload` avoids those still read by the open batch. */
  private takeFree(size: number, forUpload: boolean): GPUBuffer | undefined {
    return this.takeFrom(this.pool, size) ?? (forUpload ? undefined : this.takeFrom(this.recent, size));
  }

  /** A storage buffer of at least `bytes`; `forUpload` avoids buffers still read by the open batch. */
  acquireBuffer(bytes: number, forUpload = false): GPUBuffer {
    const size = bucketSize(bytes);
    if (size > this.device.limits.maxBufferSize) {
      throw new Error(`webgpu: a buffer of ${bytes} bytes exceeds the device's maxBufferSize ${this.device.limits.maxBufferSize}`);
    }
    const reused = this.takeFree(size, forUpload);
    if (reused) return reused;
    // Above 64 KiB a free buffer up to four size classes larger (under twice the bytes) is taken
    // before a new one is made: making one costs far more than the slack (Dawn's GL backend
    // zero-fills it at creation, ~0.7 ms per MiB), and a training step whose batch shapes change
    // would otherwise keep meeting sizes the pool lacks.
    if (size > 65536) {
      let larger = size;
      for (let k = 0; k < LARGER_CLASSES; k++) {
        larger = bucketSize(larger + 1);
        if (larger > this.bindingLimit) break; // a tensor that fits one binding stays in one
        const b = this.takeFree(larger, forUpload);
        if (b) return b;
      }
    }
    this.stats.buffersCreated++;
    return this.device.createBuffer({ size, usage: STORAGE_USAGE });
  }

  releaseBuffer(buffer: GPUBuffer): void {
    if (!this.gpu) return; // after shutdown
    const size = this.bufferSize(buffer);
    const map = this.encoder ? this.recent : this.pool;
    let list = map.get(size);
    if (!list) map.set(size, (list = []));
    this.insertById(list, buffer);
    this.pooledBytes += size;
  }

  /**
   * Free lists are kept sorted by buffer id, largest first, so `pop` hands out the oldest free
   * buffer of a size. The choice then depends on which buffers are free, not on the order they
   * were released in: a training step that allocates as the previous one did gets the same
   * buffers back, and with them the same (cached) bind groups.
   */
  private insertById(list: GPUBuffer[], buffer: GPUBuffer): void {
    const id = this.bufferId(buffer);
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.bufferId(list[mid]) > id) lo = mid + 1;
      else hi = mid;
    }
    list.splice(lo, 0, buffer);
  }

  /** A 16-byte storage buffer that kernels bind where an optional writable operand is absent. */
  get scratch(): GPUBuffer {
    this.scratchBuffer ??= this.device.createBuffer({ size: 16, usage: STORAGE_USAGE });
    return this.scratchBuffer;
  }

  /**
   * Another 16-byte buffer, for absent read-only operands (WebGPU refuses one buffer bound
   * read-only and writable in a dispatch, so not `scratch`). Binding it, rather than one of
   * the call's own inputs, keeps the bind group that holds the absent operand the same from call
   * to call (a linear layer's bias group does not change with its input).
   */
  get readScratch(): GPUBuffer {
    this.readScratchBuffer ??= this.device.createBuffer({ size: 16, usage: STORAGE_USAGE });
    return this.readScratchBuffer;
  }
  private readScratchBuffer: GPUBuffer | null = null;
  private scratchBuffer: GPUBuffer | null = null;

  /** Frees every pooled buffer (live tensors keep theirs). */
  trimPool(): void {
    this.clearBindGroups();
    for (const map of [this.pool, this.recent]) {
      for (const list of map.values()) for (const b of list) b.destroy();
      map.clear();
    }
    this.pooledBytes = 0;
  }

  alloc(numel: number, dtype: DType): GpuStorage {
    if (dtype === 'float64') throw new Error('webgpu: float64 is CPU-only; cast to float32');
    return new GpuStorage(this, dtype, numel, this.acquireBuffer(isHalf(dtype) ? halfBytes(numel) : numel * 4));
  }

  /** A half tensor's storage from its bits (two per word on the device). */
  uploadHalf(bits: Uint16Array, dtype: HalfDType): GpuStorage {
    const words = packHalfBits(bits);
    const buffer = this.acquireBuffer(words.byteLength, true);
    if (words.byteLength > 0) this.device.queue.writeBuffer(buffer, 0, words.buffer, 0, words.byteLength);
    return new GpuStorage(this, dtype, bits.length, buffer);
  }

  /** Writes raw bytes (little-endian element data) into a storage at `byteOffset` (both multiples of 4). */
  writeBytes(dst: Storage, byteOffset: number, bytes: Uint8Array): void {
    if (byteOffset % 4 || bytes.byteLength % 4) throw new Error(`webgpu: writeBytes needs 4-byte aligned offset and length, got ${byteOffset} and ${bytes.byteLength}`);
    const buffer = (dst as GpuStorage).buffer;
    if (byteOffset + bytes.byteLength > buffer.size) throw new Error(`webgpu: writeBytes past the end of a ${buffer.size}-byte buffer`);
    // ordered before the open batch's dispatches: flush first so earlier reads see the old bytes
    if (this.encoder) this.flush();
    this.device.queue.writeBuffer(buffer, byteOffset, bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  upload(data: TypedArray, dtype: DType): GpuStorage {
    if (dtype === 'float64') throw new Error('webgpu: float64 is CPU-only; cast to float32');
    if (isHalf(dtype)) return this.uploadHalf(encodeHalf(data, dtype), dtype);
    const arr = data instanceof (dtype === 'int32' ? Int32Array : Float32Array) ? data : convert(data, dtype);
    const buffer = this.acquireBuffer(arr.byteLength, true);
    if (arr.byteLength > 0) {
      this.device.queue.writeBuffer(buffer, 0, arr.buffer, arr.byteOffset, Math.ceil(arr.byteLength / 4) * 4);
    }
    return new GpuStorage(this, dtype, arr.length, buffer);
  }

  // ---- pipelines and dispatch -------------------------------------------------------

  /**
   * The pipeline of `code` (compiled on first use, then cached under `key`, default the code).
   * Its layout is explicit, read off the WGSL's declarations. The first storage bindings (up to
   * three, as maxBindGroups allows) are moved each into a group of its own (`@group(0)
   * @binding(k)` becomes `@group(k - 1) @binding(0)`), so a buffer's one bind group serves it in
   * every kernel and beside any other buffers. The group after them holds the uniforms and the
   * storage bindings past the solo ones: with storage bindings there, the uniforms take a dynamic
   * offset into the uniform arena (one bind group serves every dispatch whatever the uniforms);
   * alone there (and at most UNIFORM_SLOT_BYTES), they bind a fixed slot of the arena, one bind
   * group per offset. Solo groups come first so that the groups a pipeline change keeps are a
   * prefix (Vulkan's layout compatibility).
   */
  pipeline(code: string | (() => string), entryPoint = 'main', key?: string, uniformBytes = 0): PipelineEntry {
    const k = key ?? (code as string);
    const cacheKey = entryPoint === 'main' ? k : `${entryPoint}\n${k}`;
    let entry = this.pipelines.get(cacheKey);
    if (!entry) {
      const wgsl = typeof code === 'function' ? code() : code;
      const entries: GPUBindGroupLayoutEntry[] = [];
      const writable: boolean[] = [];
      let hasUniforms = false;
      for (const m of wgsl.matchAll(BINDING_RE)) {
        const binding = Number(m[1]);
        if (m[2] === 'uniform') {
          hasUniforms = true;
          entries.push({ binding, visibility: 4 /* COMPUTE */, buffer: { type: 'uniform', hasDynamicOffset: true } });
        } else {
          writable[binding - 1] = m[3] === 'read_write';
          entries.push({ binding, visibility: 4, buffer: { type: m[3] === 'read_write' ? 'storage' : 'read-only-storage' } });
        }
      }
      const storageBindings = writable.length;
      for (let i = 0; i < storageBindings; i++) {
        if (writable[i] === undefined) throw new Error(`webgpu pipeline ${key ?? ''}: storage bindings must be numbered 1..${storageBindings} without gaps (@binding(${i + 1}) is missing)`);
      }
      const ownGroups = Math.min(this.ownGroupCount, storageBindings);
      const moved = wgsl.replace(/@group\(0\)\s*@binding\((\d+)\)/g, (_, b: string) => {
        const n = Number(b);
        return n >= 1 && n <= ownGroups ? `@group(${n - 1}) @binding(0)` : `@group(${ownGroups}) @binding(${n})`;
      });
      const rest = entries.filter((e) => e.binding === 0 || e.binding > ownGroups);
      const uniformSlots = hasUniforms && rest.length === 1 && uniformBytes <= UNIFORM_SLOT_BYTES;
      const layout = uniformSlots ? this.uniformSlotLayout : rest.length > 0 ? this.device.createBindGroupLayout({ entries: rest }) : null;
      const groupLayouts: GPUBindGroupLayout[] = [];
      for (let i = 0; i < ownGroups; i++) groupLayouts.push(writable[i] ? this.soloLayouts.write : this.soloLayouts.read);
      if (layout) groupLayouts.push(layout);
      const module = this.device.createShaderModule({ code: moved });
      const pipeline = this.device.createComputePipeline({
        layout: this.device.createPipelineLayout({ bindGroupLayouts: groupLayouts }),
        compute: { module, entryPoint },
      });
      entry = { id: this.pipelines.size, pipeline, layout, storageBindings, writable, ownGroups, hasUniforms, uniformSlots };
      this.pipelines.set(cacheKey, entry);
    }
    return entry;
  }

  get pipelineCount(): number {
    return this.pipelines.size;
  }

  /** What the runtime keeps per buffer (made on first sight). */
  private infoOf(b: GPUBuffer): BufferInfo {
    const holder = b as unknown as { [BUFFER_INFO]?: BufferInfo };
    let info = holder[BUFFER_INFO];
    if (!info) holder[BUFFER_INFO] = info = { id: this.nextBufferId++, size: b.size, read: null, write: null, ranges: null };
    return info;
  }

  /** A small id per buffer, for bind-group cache keys. */
  private bufferId(b: GPUBuffer): number {
    return this.infoOf(b).id;
  }

  /** A buffer's size (cached: GPUBuffer.size crosses into Dawn). */
  bufferSize(b: GPUBuffer): number {
    return this.infoOf(b).size;
  }

  /** The bytes a binding spans: a range's size, or a whole buffer's. */
  bindingSize(b: BufferBinding): number {
    return asRange(b)?.size ?? this.bufferSize(b as GPUBuffer);
  }

  /**
   * The one-binding bind group of `b` (a whole buffer or a range), for reading or for writing:
   * made once per buffer and access and kept as long as the buffer lives, so pooled buffers
   * bound in new combinations (a new batch shape, another kernel) need no new bind group.
   */
  private soloGroup(b: BufferBinding, write: boolean, label: string): GPUBindGroup {
    const r = asRange(b);
    const buffer = r ? r.buffer : (b as GPUBuffer);
    const info = this.infoOf(buffer);
    const cache = this.tuning.cacheBindGroups;
    let key = '';
    if (cache) {
      if (!r) {
        const g = write ? info.write : info.read;
        if (g) return g;
      } else {
        key = `${r.offset}:${r.size}:${write ? 'w' : 'r'}`;
        const g = info.ranges?.get(key);
        if (g) return g;
      }
    }
    const group = this.device.createBindGroup({
      layout: write ? this.soloLayouts.write : this.soloLayouts.read,
      entries: [{ binding: 0, resource: r ? { buffer, offset: r.offset, size: r.size } : { buffer } }],
      label,
    });
    this.stats.bindGroupsCreated++;
    if (cache) {
      if (r) (info.ranges ??= new Map()).set(key, group);
      else if (write) info.write = group;
      else info.read = group;
    }
    return group;
  }

  /**
   * The shared group of a dispatch: the uniform arena and the buffers past the ones bound alone,
   * cached in a trie of numbers (pipeline id, uniform size, then per binding the buffer id, or for
   * a range -id, offset, size): a lookup builds no string and allocates nothing.
   */
  private sharedGroup(entry: PipelineEntry, buffers: readonly BufferBinding[], uniformSize: number, label: string): GPUBindGroup {
    let node: BindGroupNode | null = null;
    if (this.tuning.cacheBindGroups) {
      node = step(step(this.bindGroupRoot, entry.id), uniformSize);
      for (let i = entry.ownGroups; i < buffers.length; i++) {
        const b = buffers[i];
        const r = asRange(b);
        if (r) node = step(step(step(node, -this.bufferId(r.buffer)), r.offset), r.size);
        else node = step(node, this.bufferId(b as GPUBuffer));
      }
      if (node.group) return node.group;
    }
    const entries: GPUBindGroupEntry[] = [];
    if (entry.hasUniforms) entries.push({ binding: 0, resource: { buffer: this.arena, offset: 0, size: uniformSize } });
    for (let i = entry.ownGroups; i < buffers.length; i++) {
      const b = buffers[i];
      const r = asRange(b);
      entries.push({ binding: i + 1, resource: r ? { buffer: r.buffer, offset: r.offset, size: r.size } : { buffer: b as GPUBuffer } });
    }
    const group = this.device.createBindGroup({ layout: entry.layout!, entries, label });
    this.stats.bindGroupsCreated++;
    if (node) {
      if (this.bindGroupCount >= MAX_BIND_GROUPS) {
        this.clearBindGroups();
        return group;
      }
      node.group = group;
      this.bindGroupCount++;
    }
    return group;
  }

  /** The bind group of UNIFORM_SLOT_BYTES of the uniform arena at `offset` (made once per offset). */
  private uniformSlot(offset: number, label: string): GPUBindGroup {
    const i = offset / this.uniformAlign;
    const cached = this.tuning.cacheBindGroups ? this.slotGroups[i] : undefined;
    if (cached) return cached;
    const group = this.device.createBindGroup({ layout: this.uniformSlotLayout, entries: [{ binding: 0, resource: { buffer: this.arena, offset, size: UNIFORM_SLOT_BYTES } }], label });
    this.stats.bindGroupsCreated++;
    if (this.tuning.cacheBindGroups) this.slotGroups[i] = group;
    return group;
  }

  private clearBindGroups(): void {
    this.bindGroupRoot = new BindGroupNode();
    this.bindGroupCount = 0;
  }

  private ensurePass(): GPUComputePassEncoder {
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    if (!this.pass) {
      const timestampWrites = this.passTimestamps?.();
      this.pass = this.encoder.beginComputePass(timestampWrites ? { timestampWrites } : undefined);
      this.passPipeline = null;
      this.passGroups.fill(null);
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
    const wg = args.workgroups;
    const x = wg[0];
    const y = wg[1] ?? 1;
    const z = wg[2] ?? 1;
    if (x === 0 || y === 0 || z === 0) return;
    const maxWg = this.maxWorkgroups;
    if (x > maxWg || y > maxWg || z > maxWg) {
      throw new Error(`${args.label}: ${x}x${y}x${z} workgroups exceed the limit ${maxWg} per dimension`);
    }
    const maxBinding = this.bindingLimit;
    const buffers = args.buffers;
    for (let i = 0; i < buffers.length; i++) {
      const size = this.bindingSize(buffers[i]);
      if (size > maxBinding) {
        throw new Error(`${args.label}: input/output ${i} needs a storage binding of ${size} bytes, over ${maxBinding === this.maxBinding ? "this adapter's maxStorageBufferBindingSize" : 'the binding limit set (gpuContext().bindingLimit)'} ${maxBinding} (split the tensor, e.g. a large weight into row blocks)`);
      }
    }
    const entry = this.pipeline(args.code, args.entryPoint, args.key, args.uniforms?.byteLength ?? 0);
    if (entry.storageBindings !== buffers.length) {
      throw new Error(`${args.label}: the kernel declares ${entry.storageBindings} storage bindings but ${buffers.length} buffers were given`);
    }
    let offset = -1;
    let uniformSize = 0;
    if (entry.hasUniforms) {
      if (!args.uniforms) throw new Error(`${args.label}: the kernel declares uniforms but none were given`);
      uniformSize = Math.ceil(args.uniforms.byteLength / 16) * 16;
      if (entry.uniformSlots && uniformSize > UNIFORM_SLOT_BYTES) {
        throw new Error(`${args.label}: ${uniformSize} bytes of uniforms for a kernel first dispatched with at most ${UNIFORM_SLOT_BYTES} (its uniform struct cannot grow)`);
      }
      // a slot binds UNIFORM_SLOT_BYTES from its offset whatever the uniforms' size
      if (this.arenaUsed + (entry.uniformSlots ? UNIFORM_SLOT_BYTES : uniformSize) > UNIFORM_ARENA_BYTES) this.flush();
      const u = args.uniforms;
      if (u instanceof Uint32Array) this.arenaWords.set(u, this.arenaUsed >> 2); // arenaUsed: a multiple of 16
      else this.arenaHost.set(new Uint8Array(u), this.arenaUsed);
      offset = this.arenaUsed;
      this.arenaUsed += Math.ceil(uniformSize / this.uniformAlign) * this.uniformAlign;
    }
    const pass = this.ensurePass();
    if (this.passPipeline !== entry.pipeline) {
      pass.setPipeline(entry.pipeline);
      this.passPipeline = entry.pipeline;
    }
    const own = entry.ownGroups;
    for (let i = 0; i < own; i++) {
      const solo = this.soloGroup(buffers[i], entry.writable[i], args.label);
      if (this.passGroups[i] !== solo) {
        pass.setBindGroup(i, solo);
        this.passGroups[i] = solo;
      }
    }
    if (entry.uniformSlots) {
      pass.setBindGroup(own, this.uniformSlot(offset, args.label));
      this.passGroups[own] = null;
    } else if (entry.layout) {
      const group = this.sharedGroup(entry, buffers, uniformSize, args.label);
      if (offset >= 0) {
        this.dynamicOffset[0] = offset;
        pass.setBindGroup(own, group, this.dynamicOffset, 0, 1);
      } else pass.setBindGroup(own, group);
      this.passGroups[own] = null;
    }
    pass.dispatchWorkgroups(x, y, z);
    this.stats.dispatches++;
    if (this.stats.byLabel) this.stats.byLabel.set(args.label, (this.stats.byLabel.get(args.label) ?? 0) + 1);
    if (++this.dispatches >= MAX_DISPATCHES_PER_BATCH) this.flush();
  }

  /** Queues a buffer-to-buffer copy in order with the dispatches. */
  copyBuffer(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number, label = 'copyBuffer'): void {
    this.stats.copies++;
    if (this.stats.byLabel) this.stats.byLabel.set(label, (this.stats.byLabel.get(label) ?? 0) + 1);
    this.ensureEncoderForCopy().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  /** Submits everything queued. Released buffers become reusable by uploads afterwards. */
  flush(): void {
    if (this.encoder) {
      if (this.pass) this.pass.end();
      this.pass = null;
      if (this.arenaUsed > 0) this.device.queue.writeBuffer(this.arena, 0, this.arenaHost.buffer, 0, this.arenaUsed);
      const t0 = performance.now();
      this.device.queue.submit([this.encoder.finish()]);
      this.stats.submitMs += performance.now() - t0;
      this.stats.submits++;
      this.encoder = null;
      this.dispatches = 0;
      this.arenaUsed = 0;
      // The arena was consumed by this submit; later writes are ordered after it.
    }
    if (this.recent.size > 0) {
      this.recent.forEach((list, size) => {
        let dst = this.pool.get(size);
        if (!dst) this.pool.set(size, (dst = []));
        for (let i = 0; i < list.length; i++) this.insertById(dst, list[i]);
      });
      this.recent.clear();
    }
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
    this.stats.copies++;
    if (this.stats.byLabel) this.stats.byLabel.set('readBuffer', (this.stats.byLabel.get('readBuffer') ?? 0) + 1);
    const indexCheck = this.queueIndexCheck();
    this.flush();
    const t0 = performance.now();
    await staging.mapAsync(0x01 /* GPUMapMode.READ */);
    this.stats.waitMs += performance.now() - t0;
    const out = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    staging.destroy();
    this.throwErrors();
    await this.finishIndexCheck(indexCheck);
    return out;
  }

  async sync(): Promise<void> {
    const indexCheck = this.queueIndexCheck();
    this.flush();
    const t0 = performance.now();
    await this.device.queue.onSubmittedWorkDone();
    this.stats.waitMs += performance.now() - t0;
    this.throwErrors();
    await this.finishIndexCheck(indexCheck);
  }

  // ---- index checks (tuning.checkIndices) ----------------------------------------------

  /**
   * The buffer index kernels write an out-of-range index into: [flag, index, dim size, op].
   * Binding it marks a check as due at the next read-back or sync.
   */
  indexErrorBuffer(): GPUBuffer {
    this.indexErrors ??= this.device.createBuffer({ size: 16, usage: STORAGE_USAGE });
    this.indexCheckDue = true;
    return this.indexErrors;
  }
  private indexErrors: GPUBuffer | null = null;
  private indexCheckDue = false;

  /** Queues a copy of the error record (and its reset) when a check is due. */
  private queueIndexCheck(): GPUBuffer | null {
    if (!this.indexCheckDue || !this.indexErrors) return null;
    this.indexCheckDue = false;
    const staging = this.device.createBuffer({ size: 16, usage: 0x01 | 0x08 });
    const enc = this.ensureEncoderForCopy();
    enc.copyBufferToBuffer(this.indexErrors, 0, staging, 0, 16);
    enc.clearBuffer(this.indexErrors, 0, 16);
    return staging;
  }

  private async finishIndexCheck(staging: GPUBuffer | null): Promise<void> {
    if (!staging) return;
    await staging.mapAsync(0x01);
    const rec = new Uint32Array(staging.getMappedRange().slice(0));
    staging.unmap();
    staging.destroy();
    if (rec[0] !== 0) {
      const op = ['gather', 'scatterAdd'][rec[3]] ?? 'an index op';
      throw new Error(`${op}: index ${rec[1] | 0} is out of range for a dim of size ${rec[2]} (found on the GPU, reported at the read-back or sync that followed)`);
    }
  }

  destroy(): void {
    if (!this.gpu) return;
    this.trimPool();
    this.arena.destroy();
    this.scratchBuffer?.destroy();
    this.readScratchBuffer?.destroy();
    this.indexErrors?.destroy();
    this.pipelines.clear();
    this.clearBindGroups();
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

export async function createContext(order?: readonly AdapterChoice[], dawn?: DawnOptions): Promise<GpuContext> {
  context = new GpuContext(await openDevice(order, dawn));
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

/**
 * The binding of elements [start, start + count) of a tensor `t` that is dense from its offset
 * on: a byte range of its buffer beginning at the aligned address at or below the first element,
 * and that element's index within the range. With `count` at most `windowElements(...)` the
 * range fits the binding limit.
 */
export function bindWindow(t: Tensor, start: number, count: number): { binding: BufferBinding; elemOffset: number } {
  const c = ctx();
  const bpe = t.storage.bytes / Math.max(t.storage.numel, 1) || 4;
  const buffer = bufferOf(t);
  if (c.bufferSize(buffer) <= c.bindingLimit) return { binding: buffer, elemOffset: t.offset + start };
  const first = (t.offset + start) * bpe;
  const align = c.limits.minStorageBufferOffsetAlignment;
  const offset = Math.floor(first / align) * align;
  const size = Math.min(buffer.size - offset, Math.ceil((first - offset + count * bpe) / 4) * 4);
  return { binding: { buffer, offset, size: Math.max(size, 4) }, elemOffset: (first - offset) / bpe };
}

/** Elements of `bytesPerElement` a window may hold so that `bindWindow` stays within the binding limit. */
export function windowElements(bytesPerElement = 4): number {
  const c = ctx();
  const align = c.limits.minStorageBufferOffsetAlignment;
  return Math.floor((c.bindingLimit - align) / bytesPerElement / 64) * 64;
}
