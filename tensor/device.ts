/**
 * Device names. Each backend adds its own by declaration merging, from its folder:
 *
 *   declare module '../../tensor/device.js' {
 *     interface DeviceNames { wasm: true }
 *   }
 *
 * so `Device` reads as 'cpu' | 'webgpu' | 'wasm' wherever the backends are part of the
 * program, and the tensor layer names only its own reference backend.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface DeviceNames {
  /** The plain-TypeScript reference backend (tensor/cpu), always registered. */
  cpu: true;
}

export type Device = keyof DeviceNames & string;
