import type { DType } from './dtype.js';

export type Device = 'cpu' | 'webgpu';

/** Live allocations per device, for `memory()`. Storages register themselves here. */
export const liveBytes: Record<Device, number> = { cpu: 0, webgpu: 0 };
export const liveStorages: Record<Device, number> = { cpu: 0, webgpu: 0 };

/**
 * A block of memory holding `numel` elements of `dtype` on one device. Several tensors
 * (a base and its views) may share one storage: it is reference counted and freed
 * when the last tensor using it is disposed.
 */
export abstract class Storage {
  private refs = 1;
  readonly bytes: number;

  constructor(
    readonly device: Device,
    readonly dtype: DType,
    readonly numel: number,
    bytesPerElement: number,
  ) {
    this.bytes = numel * bytesPerElement;
    liveBytes[device] += this.bytes;
    liveStorages[device] += 1;
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
      liveBytes[this.device] -= this.bytes;
      liveStorages[this.device] -= 1;
      this.free();
    }
  }

  /** Gives the memory back to its allocator. Called once, when the last reference goes. */
  protected abstract free(): void;
}
