/**
 * A small WebAssembly binary emitter: the module layout (types, imports, functions, exports,
 * code), LEB128 numbers, and a function builder with the core and SIMD instructions the
 * kernels use. Kernels are generated from TypeScript at run time through it; nothing else
 * produces wasm in this project. Instruction names follow the text format (`f32x4.add` is
 * `f32x4_add`); structured control takes closures that receive their branch labels.
 *
 * Reference: the WebAssembly core specification 2.0, "Binary Format", and the fixed-width and
 * relaxed SIMD proposals' binary opcodes (0xfd prefix).
 */

export type ValType = 'i32' | 'f32' | 'v128';
const VALTYPE: Record<ValType, number> = { i32: 0x7f, f32: 0x7d, v128: 0x7b };

/** Unsigned LEB128. */
export function uleb(n: number, out: number[] = []): number[] {
  if (!Number.isInteger(n) || n < 0) throw new Error(`uleb: ${n} is not an unsigned integer`);
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

/** Signed LEB128 (for i32.const). */
export function sleb(n: number, out: number[] = []): number[] {
  if (!Number.isInteger(n)) throw new Error(`sleb: ${n} is not an integer`);
  n |= 0;
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    const done = (n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0);
    out.push(done ? b : b | 0x80);
    if (done) return out;
  }
}

const utf8 = (s: string): number[] => [...new TextEncoder().encode(s)];
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => (body.length ? [id, ...uleb(body.length), ...body] : []);

/** A local variable (or parameter) of a function. */
export class Local {
  constructor(readonly index: number, readonly type: ValType) {}
}

/** A branch target; `br(label)` jumps to the end of a block or the start of a loop. */
export class Label {
  constructor(readonly depth: number) {}
}

/** One function's body, built instruction by instruction (each method returns `this`). */
export class Func {
  readonly params: Local[];
  private locals: ValType[] = [];
  private code: number[] = [];
  private depth = 0;

  constructor(readonly paramTypes: ValType[], readonly results: ValType[] = []) {
    this.params = paramTypes.map((t, i) => new Local(i, t));
  }

  /** A new local of `type` (zero-initialised). */
  local(type: ValType): Local {
    this.locals.push(type);
    return new Local(this.paramTypes.length + this.locals.length - 1, type);
  }

  /** The encoded body: local declarations, code, end. */
  body(): number[] {
    const groups: number[][] = [];
    for (const t of this.locals) groups.push([...uleb(1), VALTYPE[t]]);
    const b = [...vec(groups), ...this.code, 0x0b];
    return [...uleb(b.length), ...b];
  }

  // ---- raw ---------------------------------------------------------------------------

  op(...bytes: number[]): this {
    this.code.push(...bytes);
    return this;
  }
  private simd(opcode: number, ...imm: number[]): this {
    this.code.push(0xfd, ...uleb(opcode), ...imm);
    return this;
  }
  private mem(opcode: number[], offset: number, align: number): this {
    if (offset < 0) throw new Error(`memarg: negative offset ${offset}`);
    this.code.push(...opcode, ...uleb(align), ...uleb(offset));
    return this;
  }

  // ---- variables and constants --------------------------------------------------------

  get(l: Local): this { return this.op(0x20, ...uleb(l.index)); }
  set(l: Local): this { return this.op(0x21, ...uleb(l.index)); }
  tee(l: Local): this { return this.op(0x22, ...uleb(l.index)); }
  globalGet(index: number): this { return this.op(0x23, ...uleb(index)); }
  i32(n: number): this { return this.op(0x41, ...sleb(n)); }
  f32(x: number): this {
    const b = new Uint8Array(new Float32Array([x]).buffer);
    return this.op(0x43, ...b);
  }
  /** v128.const of four f32 lanes. */
  f32x4(a: number, b = a, c = a, d = a): this {
    const bytes = new Uint8Array(new Float32Array([a, b, c, d]).buffer);
    return this.simd(0x0c, ...bytes);
  }
  /** v128.const of four i32 lanes. */
  i32x4(a: number, b = a, c = a, d = a): this {
    const bytes = new Uint8Array(new Int32Array([a, b, c, d]).buffer);
    return this.simd(0x0c, ...bytes);
  }
  /** Pushes a local, or an i32 constant. */
  val(x: Local | number): this {
    return typeof x === 'number' ? this.i32(x) : this.get(x);
  }
  drop(): this { return this.op(0x1a); }
  select(): this { return this.op(0x1b); }

  // ---- control ------------------------------------------------------------------------

  block(body: (exit: Label) => void): this {
    this.op(0x02, 0x40);
    const label = new Label(++this.depth);
    body(label);
    this.depth--;
    return this.op(0x0b);
  }
  loop(body: (repeat: Label) => void): this {
    this.op(0x03, 0x40);
    const label = new Label(++this.depth);
    body(label);
    this.depth--;
    return this.op(0x0b);
  }
  /** if (pops an i32) then `then`, else `otherwise`. */
  if(then: () => void, otherwise?: () => void): this {
    this.op(0x04, 0x40);
    this.depth++;
    then();
    if (otherwise) {
      this.op(0x05);
      otherwise();
    }
    this.depth--;
    return this.op(0x0b);
  }
  br(l: Label): this { return this.op(0x0c, ...uleb(this.depth - l.depth)); }
  brIf(l: Label): this { return this.op(0x0d, ...uleb(this.depth - l.depth)); }
  return(): this { return this.op(0x0f); }
  call(index: number): this { return this.op(0x10, ...uleb(index)); }

  /**
   * for (i = start; i < end; i += step) body(): a counted loop (signed compare). `end` and
   * `start` are locals or constants; the bound is read before each iteration.
   */
  for(i: Local, start: Local | number, end: Local | number, step: number, body: () => void): this {
    this.val(start).set(i);
    return this.block((exit) => {
      this.loop((repeat) => {
        this.get(i).val(end).i32_ge_s().brIf(exit);
        body();
        this.get(i).i32(step).i32_add().set(i).br(repeat);
      });
    });
  }

  // ---- memory (byte offsets; the address is on the stack) ------------------------------

  i32_load(offset = 0): this { return this.mem([0x28], offset, 2); }
  f32_load(offset = 0): this { return this.mem([0x2a], offset, 2); }
  i32_store(offset = 0): this { return this.mem([0x36], offset, 2); }
  f32_store(offset = 0): this { return this.mem([0x38], offset, 2); }
  v128_load(offset = 0): this { return this.mem([0xfd, 0x00], offset, 0); }
  v128_store(offset = 0): this { return this.mem([0xfd, 0x0b], offset, 0); }
  v128_load32_splat(offset = 0): this { return this.mem([0xfd, 0x09], offset, 0); }

  // ---- i32 ----------------------------------------------------------------------------

  i32_eqz(): this { return this.op(0x45); }
  i32_eq(): this { return this.op(0x46); }
  i32_ne(): this { return this.op(0x47); }
  i32_lt_s(): this { return this.op(0x48); }
  i32_lt_u(): this { return this.op(0x49); }
  i32_gt_s(): this { return this.op(0x4a); }
  i32_le_s(): this { return this.op(0x4c); }
  i32_ge_s(): this { return this.op(0x4e); }
  i32_ge_u(): this { return this.op(0x4f); }
  i32_add(): this { return this.op(0x6a); }
  i32_sub(): this { return this.op(0x6b); }
  i32_mul(): this { return this.op(0x6c); }
  i32_div_s(): this { return this.op(0x6d); }
  i32_div_u(): this { return this.op(0x6e); }
  i32_rem_s(): this { return this.op(0x6f); }
  i32_rem_u(): this { return this.op(0x70); }
  i32_and(): this { return this.op(0x71); }
  i32_or(): this { return this.op(0x72); }
  i32_xor(): this { return this.op(0x73); }
  i32_shl(): this { return this.op(0x74); }
  i32_shr_s(): this { return this.op(0x75); }
  i32_shr_u(): this { return this.op(0x76); }
  i32_trunc_sat_f32_s(): this { return this.op(0xfc, 0x00); }
  i32_reinterpret_f32(): this { return this.op(0xbc); }

  // ---- f32 ----------------------------------------------------------------------------

  f32_eq(): this { return this.op(0x5b); }
  f32_ne(): this { return this.op(0x5c); }
  f32_lt(): this { return this.op(0x5d); }
  f32_gt(): this { return this.op(0x5e); }
  f32_le(): this { return this.op(0x5f); }
  f32_ge(): this { return this.op(0x60); }
  f32_abs(): this { return this.op(0x8b); }
  f32_neg(): this { return this.op(0x8c); }
  f32_floor(): this { return this.op(0x8e); }
  f32_nearest(): this { return this.op(0x90); }
  f32_sqrt(): this { return this.op(0x91); }
  f32_add(): this { return this.op(0x92); }
  f32_sub(): this { return this.op(0x93); }
  f32_mul(): this { return this.op(0x94); }
  f32_div(): this { return this.op(0x95); }
  f32_min(): this { return this.op(0x96); }
  f32_max(): this { return this.op(0x97); }
  f32_convert_i32_s(): this { return this.op(0xb2); }
  f32_reinterpret_i32(): this { return this.op(0xbe); }

  // ---- v128 ---------------------------------------------------------------------------

  i8x16_shuffle(lanes: readonly number[]): this {
    if (lanes.length !== 16 || lanes.some((l) => l < 0 || l > 31)) throw new Error(`i8x16.shuffle: bad lanes ${lanes}`);
    return this.simd(0x0d, ...lanes);
  }
  /** Shuffle of 32-bit lanes: indices 0..3 pick from the first operand, 4..7 from the second. */
  f32x4_shuffle(a: number, b: number, c: number, d: number): this {
    return this.i8x16_shuffle([a, b, c, d].flatMap((l) => [4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3]));
  }
  i32x4_splat(): this { return this.simd(0x11); }
  f32x4_splat(): this { return this.simd(0x13); }
  i32x4_extract_lane(l: number): this { return this.simd(0x1b, l); }
  f32x4_extract_lane(l: number): this { return this.simd(0x1f, l); }
  f32x4_replace_lane(l: number): this { return this.simd(0x20, l); }
  i32x4_eq(): this { return this.simd(0x37); }
  i32x4_ne(): this { return this.simd(0x38); }
  i32x4_lt_s(): this { return this.simd(0x39); }
  i32x4_gt_s(): this { return this.simd(0x3b); }
  i32x4_le_s(): this { return this.simd(0x3d); }
  i32x4_ge_s(): this { return this.simd(0x3f); }
  f32x4_eq(): this { return this.simd(0x41); }
  f32x4_ne(): this { return this.simd(0x42); }
  f32x4_lt(): this { return this.simd(0x43); }
  f32x4_gt(): this { return this.simd(0x44); }
  f32x4_le(): this { return this.simd(0x45); }
  f32x4_ge(): this { return this.simd(0x46); }
  v128_not(): this { return this.simd(0x4d); }
  v128_and(): this { return this.simd(0x4e); }
  v128_andnot(): this { return this.simd(0x4f); }
  v128_or(): this { return this.simd(0x50); }
  v128_xor(): this { return this.simd(0x51); }
  /** (a, b, mask) -> a where mask bits are 1, else b. */
  v128_bitselect(): this { return this.simd(0x52); }
  v128_any_true(): this { return this.simd(0x53); }
  f32x4_nearest(): this { return this.simd(0x6a); }
  i32x4_shl(): this { return this.simd(0xab); }
  i32x4_shr_s(): this { return this.simd(0xac); }
  i32x4_shr_u(): this { return this.simd(0xad); }
  i32x4_add(): this { return this.simd(0xae); }
  i32x4_sub(): this { return this.simd(0xb1); }
  i32x4_mul(): this { return this.simd(0xb5); }
  i32x4_min_s(): this { return this.simd(0xb6); }
  i32x4_max_s(): this { return this.simd(0xb8); }
  f32x4_abs(): this { return this.simd(0xe0); }
  f32x4_neg(): this { return this.simd(0xe1); }
  f32x4_sqrt(): this { return this.simd(0xe3); }
  f32x4_add(): this { return this.simd(0xe4); }
  f32x4_sub(): this { return this.simd(0xe5); }
  f32x4_mul(): this { return this.simd(0xe6); }
  f32x4_div(): this { return this.simd(0xe7); }
  f32x4_min(): this { return this.simd(0xe8); }
  f32x4_max(): this { return this.simd(0xe9); }
  /** b < a ? b : a (no NaN propagation from b). */
  f32x4_pmin(): this { return this.simd(0xea); }
  /** a < b ? b : a. */
  f32x4_pmax(): this { return this.simd(0xeb); }
  i32x4_replace_lane(l: number): this { return this.simd(0x1c, l); }
  i32x4_trunc_sat_f32x4_s(): this { return this.simd(0xf8); }
  f32x4_convert_i32x4_s(): this { return this.simd(0xfa); }
  /** Relaxed SIMD: a * b + c, fused or not (the hardware's choice). Only where the probe passed. */
  f32x4_relaxed_madd(): this { return this.simd(0x105); }
}

/** What a generated module imports: the shared memory, and per-thread i32 globals. */
export interface ModuleSpec {
  /** Names of immutable i32 globals imported from "env" (e.g. the thread's scratch pointer). */
  globals?: readonly string[];
  /** Exported functions. */
  funcs: readonly { name: string; func: Func }[];
  /** The imported memory is shared (threads) with this maximum in 64 KiB pages. */
  maxPages: number;
  /** A name for profiles (the "name" custom section: the functions show as name.export). */
  name?: string;
}

/** Encodes a module that imports env.memory (shared) and the named i32 globals. */
export function encodeModule(spec: ModuleSpec): Uint8Array {
  const types: number[][] = [];
  const typeIndex = new Map<string, number>();
  const funcTypes = spec.funcs.map(({ func }) => {
    const enc = [0x60, ...vec(func.paramTypes.map((t) => [VALTYPE[t]])), ...vec(func.results.map((t) => [VALTYPE[t]]))];
    const key = enc.join(',');
    if (!typeIndex.has(key)) {
      typeIndex.set(key, types.length);
      types.push(enc);
    }
    return typeIndex.get(key)!;
  });
  const imports: number[][] = [
    // memory: limits flag 0x03 = shared with a maximum
    [...uleb(3), ...utf8('env'), ...uleb(6), ...utf8('memory'), 0x02, 0x03, ...uleb(1), ...uleb(spec.maxPages)],
    ...(spec.globals ?? []).map((g) => [...uleb(3), ...utf8('env'), ...uleb(utf8(g).length), ...utf8(g), 0x03, VALTYPE.i32, 0x00]),
  ];
  const exports = spec.funcs.map(({ name }, i) => [...uleb(utf8(name).length), ...utf8(name), 0x00, ...uleb(i)]);
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(types)),
    ...section(2, vec(imports)),
    ...section(3, vec(funcTypes.map((t) => uleb(t)))),
    ...section(7, vec(exports)),
    ...section(10, vec(spec.funcs.map(({ func }) => func.body()))),
    ...(spec.name ? nameSection(spec.name, spec.funcs.map((x) => x.name)) : []),
  ]);
}

/** The custom "name" section's function-name subsection, so profilers show kernel names. */
function nameSection(module: string, funcs: readonly string[]): number[] {
  const names = vec(funcs.map((n, i) => [...uleb(i), ...uleb(utf8(`${module}.${n}`).length), ...utf8(`${module}.${n}`)]));
  const sub = [0x01, ...uleb(names.length), ...names];
  const body = [...uleb(4), ...utf8('name'), ...sub];
  return [0x00, ...uleb(body.length), ...body];
}
