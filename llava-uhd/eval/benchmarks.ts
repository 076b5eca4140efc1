/**
 * The paper's eight benchmarks (LLaVA-UHD-V4.md, "Evaluation"; the paper's Table A2) and how the
 * release's VLMEvalKit treats each: its dataset type (VLMEvalKit's `DATASET_TYPE`: the class the
 * name belongs to), whether the `MiniCPM_4_V` wrapper asks for chain of thought and up-scales
 * small images (`use_cot_func`, `use_upsize_func` in `vlmevalkit/vlmeval/vlm/minicpm_v.py`),
 * and how its scorer reads the answers. Any other TSV is a "custom" benchmark: multiple choice
 * when it has option columns A and B (VLMEvalKit's `CustomMCQDataset`), else open questions.
 */
export const BENCHMARKS = [
  'MMMU_DEV_VAL', 'MathVista_MINI', 'MMBench_DEV_EN_V11', 'MMBench_DEV_CN_V11', 'MMStar', 'HallusionBench', 'AI2D_TEST', 'OCRBench',
] as const;
export type PaperBenchmark = (typeof BENCHMARKS)[number];
export type BenchmarkName = PaperBenchmark | 'custom_mcq' | 'custom_vqa';

/** VLMEvalKit's dataset types. */
export type DatasetType = 'MCQ' | 'Y/N' | 'VQA';

export interface Benchmark {
  name: BenchmarkName;
  type: DatasetType;
  /** `MiniCPM_4_V.use_cot_func`. */
  cot: boolean;
  /** `MiniCPM_4_V.use_upsize_func`. */
  upsize: boolean;
  /** MMBench's circular evaluation (`ImageMCQDataset.evaluate`: 'mmbench' in the name). */
  circular: boolean;
  /** Rows must have at least two options (MMMU has open questions too, custom data may not). */
  requireOptions: boolean;
}

const TYPES: Record<BenchmarkName, DatasetType> = {
  MMMU_DEV_VAL: 'MCQ', MathVista_MINI: 'VQA', MMBench_DEV_EN_V11: 'MCQ', MMBench_DEV_CN_V11: 'MCQ', MMStar: 'MCQ',
  HallusionBench: 'Y/N', AI2D_TEST: 'MCQ', OCRBench: 'VQA', custom_mcq: 'MCQ', custom_vqa: 'VQA',
};

/** VLMEvalKit's `listinstr`: does any of `keys` occur in `name`. */
const listinstr = (keys: readonly string[], name: string) => keys.some((k) => name.includes(k));

export function benchmark(name: BenchmarkName): Benchmark {
  if (!(name in TYPES)) throw new Error(`benchmark: '${name}' is not one of ${[...BENCHMARKS, 'custom_mcq', 'custom_vqa'].join(', ')}`);
  const paper = name !== 'custom_mcq' && name !== 'custom_vqa';
  return {
    name,
    type: TYPES[name],
    // MiniCPM_4_V: CoT for MMMU, MathVista, MMStar, OCRBench (and ChartQA); up-scaling for the same four
    cot: paper && listinstr(['MMMU', 'MathVista', 'MMStar', 'OCRBench', 'ChartQA'], name),
    upsize: paper && listinstr(['MMMU', 'MathVista', 'MMStar', 'OCRBench', 'ChartQA'], name),
    circular: listinstr(['mmbench', 'ccbench'], name.toLowerCase()),
    requireOptions: listinstr(['MMBench', 'MMStar', 'AI2D'], name),
  };
}

/**
 * The benchmark a file is, from its name (`MMStar.tsv`, `MMBench_DEV_EN_V11_local.tsv` as
 * VLMEvalKit's LOCALIZE writes large files), else a custom one by its columns.
 */
export function inferBenchmark(fileStem: string, columns: readonly string[]): BenchmarkName {
  const stem = fileStem.replace(/_local$/, '');
  const hit = BENCHMARKS.find((b) => b === stem);
  if (hit) return hit;
  return columns.includes('A') && columns.includes('B') ? 'custom_mcq' : 'custom_vqa';
}

/** Parses a `--benchmark` value (case as VLMEvalKit spells it, or lower case). */
export function parseBenchmark(text: string): BenchmarkName {
  const all: BenchmarkName[] = [...BENCHMARKS, 'custom_mcq', 'custom_vqa'];
  const hit = all.find((b) => b === text) ?? all.find((b) => b.toLowerCase() === text.toLowerCase());
  if (!hit) throw new Error(`--benchmark: '${text}' is not one of ${all.join(', ')}`);
  return hit;
}

/**
 * Generation as the release evaluated: `MiniCPM_4_V.generate_inner` passes
 * `max_new_tokens = MAX_NEW_TOKENS` (default 2048), `sampling=False`, `num_beams = NUM_BEAMS`
 * (default 3) and `max_inp_length=8192` to the model's `chat()`, whose non-sampling generation
 * config adds `repetition_penalty` 1.2 (MiniCPM-V's `chat()` in `modeling_minicpmv.py`; the 4.x
 * remote code keeps those defaults: *assumption*, we could read the 2.6 code only).
 */
export interface GenerationSettings {
  maxNewTokens: number;
  numBeams: number;
  repetitionPenalty: number;
  /** Longest prompt in tokens (`max_inp_length`); a longer one is an error here, not truncated. */
  maxInputLength: number;
}

export const RELEASE_GENERATION: Readonly<GenerationSettings> = { maxNewTokens: 2048, numBeams: 3, repetitionPenalty: 1.2, maxInputLength: 8192 };
