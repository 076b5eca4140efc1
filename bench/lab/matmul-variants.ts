/**
 * Matmul kernel lab (llm.c style): every variant is checked against the CPU reference, then
 * timed, on dense row-major matrices (transposed views for the x4/k4 fetch orientation). The
 * ladder goes from the naive kernel through workgroup-memory tiling and register blocking to
 * the configs kernels/matmul.ts ships; cost probes time the shipped kernel with parts removed.
 *
 *
 * Each variant's time is the median over samples (bench/lab/timing.ts: timestamp queries where
 * the device has them, else the wall clock), next to the median CPU time of this process, which
 * on llvmpipe includes the kernels and is steadier on a shared machine. Results go to
 * bench/results/lab-matmul-variants.{md,json}.
 *
 *   npx tsx bench/lab/matmul-variants.ts [512 | MxNxK ...] [--only substring] [--samples n]
 *       [--configs 64x128x16/16x16,...]   tile BMxBNxBK / per-thread TMxTN, instead of the ladder
 *       [--probes substring]              cost probes (see PROBES) on the first config
 *       [--quick]                         shapes 256 and 512 only, 3 samples
 *       [--wall]                          the wall clock even where timestamp queries exist
 */
import { Uniforms } from '../../kernels/layout.js';
import {
  CPU_TILES, matmulWGSL, matmulWith, type MatmulConfig, type MatmulVariant, type PanelMode,
} from '../../kernels/matmul.js';
import { bufferOf, ctx } from '../../kernels/runtime.js';
import * as uhd from '../../tensor/index.js';
import type { Tensor } from '../../tensor/index.js';
import { runLab } from './report.js';
import { median } from './timing.js';

interface LabVariant {
  name: string;
  /** Takes a and b as transposed views (a = aT.transpose() with aT dense) instead of dense. */
  transposed?: boolean;
  /** A cost probe: its result is not checked. */
  experiment?: boolean;
  /** Queues out = a @ b for dense a: [M, K], b: [K, N]. */
  run: (a: Tensor, b: Tensor, out: Tensor) => void;
}

/** One thread per output, straight from global memory. */
function naive(): LabVariant {
  const u = () => new Uniforms().u32('M', 0).u32('N', 0).u32('K', 0);
  const code = /* wgsl */ `
${u().declaration()}
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let r = gid.y; let c = gid.x;
  if (r >= P.M || c >= P.N) { return; }
  var acc = 0.0;
  for (var k = 0u; k < P.K; k++) { acc = fma(a[r * P.K + k], b[k * P.N + c], acc); }
  o[r * P.N + c] = acc;
}`;
  return {
    name: 'naive 1x1/thread',
    run: (a, b, out) => {
      const [M, K] = a.shape;
      const N = b.shape[1];
      const uni = new Uniforms().u32('M', M).u32('N', N).u32('K', K);
      ctx().dispatch({ label: 'lab naive', code, uniforms: uni.bytes(), buffers: [a, b, out].map(bufferOf), workgroups: [Math.ceil(N / 16), Math.ceil(M / 16)] });
    },
  };
}

/** 16x16 tiles staged in workgroup memory, one output per thread. */
function sharedTiled(): LabVariant {
  const u = () => new Uniforms().u32('M', 0).u32('N', 0).u32('K', 0);
  const code = /* wgsl */ `
${u().declaration()}
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;
var<workgroup> As: array<array<f32, 16>, 16>;
var<workgroup> Bs: array<array<f32, 16>, 16>;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let r = gid.y; let c = gid.x;
  var acc = 0.0;
  for (var k0 = 0u; k0 < P.K; k0 += 16u) {
    let ka = k0 + lid.x; let kb = k0 + lid.y;
    As[lid.y][lid.x] = select(0.0, a[r * P.K + ka], r < P.M && ka < P.K);
    Bs[lid.y][lid.x] = select(0.0, b[kb * P.N + c], kb < P.K && c < P.N);
    workgroupBarrier();
    for (var k = 0u; k < 16u; k++) { acc = fma(As[lid.y][k], Bs[k][lid.x], acc); }
    workgroupBarrier();
  }
  if (r < P.M && c < P.N) { o[r * P.N + c] = acc; }
}`;
  return {
    name: 'shared 16x16, 1x1/thread',
    run: (a, b, out) => {
      const [M, K] = a.shape;
      const N = b.shape[1];
      const uni = new Uniforms().u32('M', M).u32('N', N).u32('K', K);
      ctx().dispatch({ label: 'lab shared', code, uniforms: uni.bytes(), buffers: [a, b, out].map(bufferOf), workgroups: [Math.ceil(N / 16), Math.ceil(M / 16)] });
    },
  };
}

/** The shipped kernel generator with a given config and fetch modes; `edit` rewrites its WGSL. */
function blocked(config: MatmulConfig, a: PanelMode, b: PanelMode, out: 'v4' | 's', edit?: [string, (wgsl: string) => string]): LabVariant {
  const v: MatmulVariant = { config, a, b, out };
  const { bm, bn, bk, tm, tn } = config;
  // a probe may remove every read of a or b: keep them bound with a phony read
  const keepBound = (w: string) => w.replace('let batch = wid.z', '_ = a[0]; _ = b[0];\n  let batch = wid.z');
  const code = edit ? keepBound(edit[1](matmulWGSL(v))) : matmulWGSL(v);
  return {
    name: `tile ${bm}x${bn}x${bk}, ${tm}x${tn}/thread, a:${a} b:${b} out:${out}${edit ? ` [${edit[0]}]` : ''}`,
    run: (x, y, o) => matmulWith(v, x, y, o, code),
    experiment: edit !== undefined,
  };
}

/** Cost probes: the same kernel with parts removed or changed (results may be wrong). */
const PROBES: [string, (wgsl: string) => string][] = [
  ['no As/Bs reads', (w) => w.replace(/let ([ab]\d+) = [AB]s\[[ab]_buf[^;]*;/g, 'let $1 = vec4f(f32(k) * 1e-3, 1.0, 2.0, 3.0);')],
  ['mul+add', (w) => w.replace(/fma\((vec4f\([^)]*\)), (b\d+), (acc\w+)\)/g, '$3 + $1 * $2')],
  ['no staging', (w) => w.replace(/(fn stage_\w\([^)]*\) \{)[\s\S]*?\n\}/g, '$1}')],
  ['no barriers', (w) => w.replace(/workgroupBarrier\(\);/g, '')],
  // the shipped staging loop has a per-thread trip count, which keeps Mesa from unrolling it
  // (~40% less compile time); this probe unrolls it to compare run time
  ['staging trip count fixed', (w) => w.replace(/for \(var e = li; e < (\d+)u; e \+= (\d+)u\) \{/g,
    (_, b: string, n: string) => `for (var i = 0u; i < ${Math.ceil(Number(b) / Number(n))}u; i++) {\n    let e = li + i * ${n}u;\n    if (e >= ${b}u) { break; }`)],
  ['uniform As/Bs index', (w) => w.replace(/(let [ab]_buf = [^;]*) \+ lid\.[xy];/g, '$1;')],
];

const cfg = (bm: number, bn: number, bk: number, tm: number, tn: number): MatmulConfig => ({ bm, bn, bk, tm, tn });

function parseConfig(s: string): MatmulConfig {
  const [tile, thread] = s.split('/');
  const [bm, bn, bk] = tile.split('x').map(Number);
  const [tm, tn] = thread.split('x').map(Number);
  return cfg(bm, bn, bk, tm, tn);
}

/**
 * Without `configs`: the ladder (naive, workgroup tiles, register blocks of 4x4 and 8x8, the GPU
 * table's big config, then the CPU table's 16x16 blocks with scalar and vec4 fetches). With
 * them: each config with vec4 and with scalar fetches.
 */
function variants(configs: MatmulConfig[] | undefined, probes?: string): LabVariant[] {
  const list: LabVariant[] = [];
  if (configs) {
    for (const c of configs) list.push(blocked(c, 'k4', 'x4', 'v4'), blocked(c, 'scalar', 'scalar', 's'));
  } else {
    list.push(naive(), sharedTiled());
    list.push(blocked(cfg(64, 64, 16, 4, 4), 'scalar', 'scalar', 's'), blocked(cfg(64, 64, 16, 4, 4), 'k4', 'x4', 'v4'));
    list.push(blocked(cfg(64, 64, 16, 8, 8), 'k4', 'x4', 'v4'), blocked(cfg(128, 128, 8, 8, 8), 'k4', 'x4', 'v4'));
    for (const { config } of CPU_TILES.slice(0, 3)) list.push(blocked(config, 'scalar', 'scalar', 's'), blocked(config, 'k4', 'x4', 'v4'));
    // the other vec4 fetch orientation: a and b given as transposed views
    list.push({ ...blocked(CPU_TILES[0].config, 'x4', 'k4', 'v4'), transposed: true });
  }
  const first = configs?.[0] ?? CPU_TILES[0].config;
  if (probes) for (const e of PROBES.filter(([n]) => n.includes(probes))) list.push(blocked(first, 'k4', 'x4', 'v4', e));
  return list;
}

function maxRelErr(got: ArrayLike<number>, want: ArrayLike<number>, K: number): number {
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / Math.sqrt(K));
  return worst;
}

interface Timed {
  v: LabVariant;
  out: Tensor;
  x: Tensor;
  y: Tensor;
  ms: number[];
  cpu: number[];
}

await runLab('matmul-variants', async (report) => {
  const argv = [...report.settings.rest];
  const flag = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv.splice(i, 2)[1] : undefined;
  };
  const only = flag('--only');
  const samples = Number(flag('--reps') ?? report.settings.samples);
  const configArg = flag('--configs');
  const probes = flag('--probes');
  const configs = configArg?.split(',').map(parseConfig);
  const positional = argv.filter((x) => !x.startsWith('--'));
  // "512" is a square matmul, "4x4096x1024" is M x N x K
  const shapes = (positional.length ? positional : report.settings.quick ? ['256', '512'] : ['256', '512', '1024']).map((p) => {
    const [M, N = M, K = M] = p.split('x').map(Number);
    return [M, N, K] as const;
  });
  const table = report.table('matmul, f32, dense row-major (transposed views where marked)', ['M x N x K', 'variant', 'median ms', 'GFLOP/s', 'cpu ms (median)', 'GFLOP/cpu-s']);

  for (const [M, N, K] of shapes) {
    uhd.manualSeed(M + N + K);
    const a = uhd.randn([M, K]);
    const b = uhd.randn([K, N]);
    const want = await uhd.matmul(a, b).data();
    const ga = a.to('webgpu');
    const gb = b.to('webgpu');
    const gaT = a.transpose().contiguous().to('webgpu');
    const gbT = b.transpose().contiguous().to('webgpu');
    const [taView, tbView] = [gaT.transpose(), gbT.transpose()];
    // Check every variant first (this also compiles its pipeline) ...
    const timed: Timed[] = [];
    for (const v of variants(configs, probes)) {
      if (only && !v.name.includes(only)) continue;
      if (!v.name.startsWith('tile') && M * N * K > 512 ** 3) continue; // minutes on llvmpipe
      const out = uhd.Tensor.empty([M, N], 'float32', 'webgpu');
      const [x, y] = v.transposed ? [taView, tbView] : [ga, gb];
      v.run(x, y, out);
      const err = maxRelErr(await out.data(), want, K);
      if (!(err < 1e-5) && !v.experiment) {
        report.row(table, [`${M}x${N}x${K}`, v.name, `WRONG: max |err|/sqrt(K) = ${err.toExponential(1)}`, '', '', '']);
        out.dispose();
        continue;
      }
      timed.push({ v, out, x, y, ms: [], cpu: [] });
    }
    // ... then time them in interleaved rounds, so that load from other processes spreads
    // evenly. Process CPU time (llvmpipe runs its threads in this process) ranks variants
    // when others are busy.
    for (let r = 0; r < samples; r++) {
      for (const t of timed) {
        const c0 = process.cpuUsage();
        t.ms.push(await report.timer.sample(() => t.v.run(t.x, t.y, t.out)));
        const dc = process.cpuUsage(c0);
        t.cpu.push((dc.user + dc.system) / 1e3);
      }
    }
    const gf = (ms: number) => (2 * M * N * K) / (ms / 1e3) / 1e9;
    for (const t of timed) {
      const [w, c] = [median(t.ms), median(t.cpu)];
      report.row(table, [`${M}x${N}x${K}`, t.v.name, w, gf(w), c, gf(c)]);
      t.out.dispose();
    }
    for (const t of [a, b, ga, gb, gaT, gbT, taView, tbView]) t.dispose();
  }
}, 3);
