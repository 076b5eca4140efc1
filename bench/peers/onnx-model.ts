/**
 * Builds small ONNX models in memory: a protobuf writer for the few ModelProto fields a float32
 * graph needs (field numbers from onnx/onnx.proto), and a graph builder over it. Enough for
 * MatMul, Softmax, LayerNormalization and a transformer block's forward; nothing more.
 */

/** Protobuf wire types. */
const VARINT = 0;
const FIXED32 = 5;
const LEN = 2;

class ProtoWriter {
  private chunks: number[] = [];

  private varint(v: number | bigint): void {
    let x = BigInt.asUintN(64, BigInt(v));
    while (x >= 0x80n) {
      this.chunks.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    this.chunks.push(Number(x));
  }
  private tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }
  int(field: number, v: number): this {
    this.tag(field, VARINT);
    this.varint(v);
    return this;
  }
  float(field: number, v: number): this {
    this.tag(field, FIXED32);
    const b = new Uint8Array(new Float32Array([v]).buffer);
    this.chunks.push(...b);
    return this;
  }
  bytes(field: number, b: Uint8Array): this {
    this.tag(field, LEN);
    this.varint(b.length);
    for (let i = 0; i < b.length; i++) this.chunks.push(b[i]);
    return this;
  }
  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }
  message(field: number, m: ProtoWriter): this {
    return this.bytes(field, m.finish());
  }
  finish(): Uint8Array {
    return Uint8Array.from(this.chunks);
  }
}

/** TensorProto.DataType */
const FLOAT = 1;
const INT64 = 7;

/** AttributeProto.AttributeType */
const ATTR_FLOAT = 1;
const ATTR_INT = 2;
const ATTR_STRING = 3;
const ATTR_INTS = 7;

export type AttrValue = number | string | number[] | { float: number };

function attribute(name: string, v: AttrValue): ProtoWriter {
  // AttributeProto: name 1, f 2, i 3, s 4, ints 8, type 20
  const a = new ProtoWriter().string(1, name);
  if (typeof v === 'string') return a.bytes(4, new TextEncoder().encode(v)).int(20, ATTR_STRING);
  if (Array.isArray(v)) {
    for (const x of v) a.int(8, x);
    return a.int(20, ATTR_INTS);
  }
  if (typeof v === 'object') return a.float(2, v.float).int(20, ATTR_FLOAT);
  return a.int(3, v).int(20, ATTR_INT);
}

/** ValueInfoProto for a float32 tensor of a fixed shape. */
function valueInfo(name: string, shape: number[]): ProtoWriter {
  // TensorShapeProto.Dimension: dim_value 1; TensorShapeProto: dim 1
  const dims = new ProtoWriter();
  for (const d of shape) dims.message(1, new ProtoWriter().int(1, d));
  // TypeProto.Tensor: elem_type 1, shape 2; TypeProto: tensor_type 1; ValueInfoProto: name 1, type 2
  const tensorType = new ProtoWriter().int(1, FLOAT).message(2, dims);
  return new ProtoWriter().string(1, name).message(2, new ProtoWriter().message(1, tensorType));
}

/** A graph under construction; node outputs get fresh names. */
export class OnnxGraph {
  private nodes: ProtoWriter[] = [];
  private initializers: ProtoWriter[] = [];
  private inputs: ProtoWriter[] = [];
  private outputs: ProtoWriter[] = [];
  private count = 0;

  input(name: string, shape: number[]): string {
    this.inputs.push(valueInfo(name, shape));
    return name;
  }

  /** A float32 constant (weights). */
  constant(name: string, shape: number[], data: Float32Array): string {
    // TensorProto: dims 1, data_type 2, name 8, raw_data 9 (little-endian)
    const t = new ProtoWriter();
    for (const d of shape) t.int(1, d);
    t.int(2, FLOAT).string(8, name).bytes(9, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    this.initializers.push(t);
    return name;
  }

  /** An int64 constant (shapes for Reshape). */
  int64s(name: string, values: number[]): string {
    const raw = new Uint8Array(new BigInt64Array(values.map(BigInt)).buffer);
    this.initializers.push(new ProtoWriter().int(1, values.length).int(2, INT64).string(8, name).bytes(9, raw));
    return name;
  }

  /** Adds a node; returns its output's name. */
  op(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}): string {
    const out = `${opType.toLowerCase()}_${this.count++}`;
    // NodeProto: input 1, output 2, name 3, op_type 4, attribute 5
    const n = new ProtoWriter();
    for (const i of inputs) n.string(1, i);
    n.string(2, out).string(3, out).string(4, opType);
    for (const [k, v] of Object.entries(attrs)) n.message(5, attribute(k, v));
    this.nodes.push(n);
    return out;
  }

  output(name: string, shape: number[]): void {
    this.outputs.push(valueInfo(name, shape));
  }

  /** The serialized ModelProto (ONNX IR 9, default domain at `opset`). */
  model(opset: number): Uint8Array {
    // GraphProto: node 1, name 2, initializer 5, input 11, output 12
    const g = new ProtoWriter();
    for (const n of this.nodes) g.message(1, n);
    g.string(2, 'peers');
    for (const t of this.initializers) g.message(5, t);
    for (const i of this.inputs) g.message(11, i);
    for (const o of this.outputs) g.message(12, o);
    // ModelProto: ir_version 1, producer_name 2, graph 7, opset_import 8 (OperatorSetIdProto: domain 1, version 2)
    return new ProtoWriter().int(1, 9).string(2, 'uhd bench/peers').message(7, g).message(8, new ProtoWriter().string(1, '').int(2, opset)).finish();
  }
}
