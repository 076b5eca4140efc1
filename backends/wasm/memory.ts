/**
 * The wasm backend's memory: one shared WebAssembly.Memory that every thread's kernels
 * import, and a size-bucketed allocator over it (freed blocks go back to their bucket's free
 * list; the memory grows, never shrinks or moves). A storage is a region of it, seen from
 * JavaScript as a typed array, so the CPU reference kernels run on it unchanged.
 */
import { bytesPerElement, type DType, type TypedArray } from '../../tensor/dtype.js';
import { HostStorage } from '../../tensor/storage.js';

const PAGE = 65536;
/** wasm32's limit: 4 GiB of 64 KiB pages. */
export const MAX_PAGES = 65536;
/** Every block starts on a 64-byte boundary (a cache line; v128 loads stay aligned). */
const ALIGN = 64;

/** Size classes: powers of two up to 64 KiB, then quarter-octave steps (at most 19% slack). */
export function bucketSize(bytes: number): number {
  const b = Math.max(bytes, ALIGN);
  if (b <= 65536) return 2 ** Math.ceil(Math.log2(b));
  const step = 2 ** (Math.floor(Math.log2(b)) - 2);
  return Math.ceil(b / step) * step;
}

export class WasmHeap {
  readonly memory: WebAssembly.Memory;
  private top: number;
  private free = new Map<number, number[]>();
  /** Bytes handed out and not yet freed (in bucket sizes). */
  inUse = 0;

  constructor(initialPages = 256, reserved = 4096) {
    this.memory = new WebAssembly.Memory({ initial: initialPages, maximum: MAX_PAGES, shared: true });
    // the first bytes are never handed out: 0 is no pointer, and kernels' arguments live there
    this.top = reserved;
  }

  get buffer(): SharedArrayBuffer {
    return this.memory.buffer as unknown as SharedArrayBuffer;
  }

  /** A 64-byte aligned block of at least `bytes`; `op` names the caller in an out-of-memory error. */
  alloc(bytes: number, op = 'alloc'): { ptr: number; size: number } {
    const size = bucketSize(bytes);
    const list = this.free.get(size);
    const reused = list?.pop();
    if (reused !== undefined) {
      this.inUse += size;
      return { ptr: reused, size };
    }
    const ptr = Math.ceil(this.top / ALIGN) * ALIGN;
    const end = ptr + size;
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      const pages = Math.ceil((end - have) / PAGE);
      const total = have / PAGE + pages;
      if (total > MAX_PAGES) {
        throw new Error(`${op}: the wasm backend's memory would exceed 4 GiB (wasm32) allocating ${(bytes / 2 ** 20).toFixed(1)} MiB with ${(this.inUse / 2 ** 20).toFixed(0)} MiB in use; free tensors or use another device`);
      }
      // grow by at least an eighth, so a sequence of allocations grows rarely
      this.memory.grow(Math.min(MAX_PAGES - have / PAGE, Math.max(pages, Math.ceil(have / PAGE / 8))));
    }
    this.top = end;
    this.inUse += size;
    return { ptr, size };
  }

  release(ptr: number, size: number): void {
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(ptr);
    this.inUse -= size;
  }
}

let heap: WasmHeap | null = null;

export function openHeap(): WasmHeap {
  return (heap ??= new WasmHeap());
}

export function currentHeap(): WasmHeap {
  if (!heap) throw new Error("wasm: the backend is not open; call `await openDevice('wasm')`");
  return heap;
}

export function closeHeap(): void {
  heap = null;
}

/** A tensor's memory on the wasm device: a region of the shared memory. */
export class WasmStorage extends HostStorage {
  readonly data: TypedArray;
  private readonly block: { ptr: number; size: number };

  constructor(private readonly heap: WasmHeap, dtype: DType, numel: number) {
    super('wasm', dtype, numel, bytesPerElement(dtype));
    if (dtype === 'float64') throw new Error('wasm: float64 stays on the CPU reference backend; cast to float32');
    this.block = heap.alloc(numel * 4, 'wasm');
    const buf = heap.buffer;
    this.data = dtype === 'int32' ? new Int32Array(buf, this.block.ptr, numel) : new Float32Array(buf, this.block.ptr, numel);
  }

  /** Byte address of element 0 in the shared memory. */
  get ptr(): number {
    return this.block.ptr;
  }

  protected free(): void {
    this.heap.release(this.block.ptr, this.block.size);
  }
}
