import type { DType, TypedArray } from './dtype.js';
import type { Device } from './device.js';

export type { Device } from './device.js';

/** Live tensors, storages and bytes on one device, for `memory()`. */
export interface LiveCounts {
  tensors: number;
  storages: number;
  bytes: number;
}

const live = new Map<Device, LiveCounts>();

/** The counters of `device` (created at zero on first use). */
export function liveCounts(device: Device): LiveCounts {
  let c = live.get(device);
  if (!c) live.set(device, (c = { tensors: 0, storages: 0, bytes: 0 }));
  return c;
}

/** Devices that have held a tensor or storage. */
export function countedDevices(): Device[] {
  return [...live.keys()];
}

/**
 * A block of memory holding `numel` elements of `dtype` on one device. Several tensors
 * (a base and its views) may share one storage: it is reference counted and freed
 * when the last tensor using it is disposed.
 */
export abstract class Storage {
  private refs = 1;
  readonly bytes: number;
  /** Its device's live counters (`liveCounts(device)`), which its tensors update too. */
  readonly counts: LiveCounts;

  constructor(
    readonly device: Device,
    readonly dtype: DType,
    readonly numel: number,
    bytesPerElement: number,
  ) {
    this.bytes = numel * bytesPerElement;
    this.counts = liveCounts(device);
    this.counts.bytes += this.bytes;
    this.counts.storages += 1;
  }

  get alive(): boolean {
    return this.refs > 0;
  }

  /** How many tensor handles share this storage. */
  get refCount(): number {
    return this.refs;
  }

  retain(): this {
    if (this.refs <= 0) throw new Error('storage used after it was freed');
    this.refs++;
    return this;
  }

  release(): void {
    if (this.refs <= 0) return;
    if (--this.refs === 0) {
      this.counts.bytes -= this.bytes;
      this.counts.storages -= 1;
      this.free();
    }
  }

  /** Gives the memory back to its allocator. Called once, when the last reference goes. */
  protected abstract free(): void;
}

/**
 * Storage in this process's memory as one typed array over exactly its elements (the CPU
 * backend's arrays, the wasm backend's regions of its shared memory). The CPU reference
 * kernels run on any host storage, so a host-memory backend can fall back to them.
 */
export abstract class HostStorage extends Storage {
  abstract readonly data: TypedArray;
}
