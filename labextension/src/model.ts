/**
 * The state of one kernel's stream: pure data, no DOM and no JupyterLab, so it is unit-tested and
 * benchmarked on its own. `apply()` takes a raw message as it came off IOPub, checks it against the
 * schema (kernel side: greenjupyter/ipython/stream.py) and folds it in.
 */

/** The schema version this panel reads. */
export const VERSION = 1;
/** MIME types of the stream, any version: `application/vnd.greenjupyter.v<N>+json`. */
export const MIME_PATTERN = /^application\/vnd\.greenjupyter\.v(\d+)\+json$/;

export interface ICellRecord {
  readonly executionCount: number | null;
  readonly cellId: string | null;
  readonly sourcePreview: string;
  readonly success: boolean;
  readonly error: string | null;
  /** Unix seconds. */
  readonly startedAt: number;
  readonly durationS: number;
  readonly energyJ: number;
  readonly components: Readonly<Record<string, number>>;
  readonly estimated: boolean;
  readonly avgPowerW: number | null;
  readonly peakPowerW: number | null;
  readonly co2eG: number | null;
}

/** An everyday equivalent of the totals' CO2e, chosen and worded by the kernel (`%carbon` shows the same). */
export interface IEquivalent {
  readonly key: string;
  readonly text: string;
}

export interface ITotals {
  readonly cells: number;
  readonly durationS: number;
  readonly energyJ: number;
  readonly co2eG: number | null;
  readonly equivalents: readonly IEquivalent[];
  /** Energy drawn between cells and for how long, up to when the kernel sent them; null from a kernel that does not say. */
  readonly idleJ: number | null;
  readonly idleS: number | null;
}

export interface IGrid {
  readonly region: string;
  readonly name: string;
  readonly gPerKwh: number;
  readonly pue: number;
  readonly source: string;
  readonly origin: string;
}

/** What `apply` did with a message. */
export type ApplyResult = 'applied' | 'ignored' | 'invalid';

export interface IModelOptions {
  /** Seconds of samples kept (the kernel's default history is an hour). */
  historyS?: number;
  /** Cell records kept. */
  cellsKept?: number;
  /** Where notes about ignored messages go (console by default; tests pass their own). */
  log?: (message: string) => void;
}

type Json = Record<string, unknown>;

const isNumber = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
const isString = (x: unknown): x is string => typeof x === 'string';
const isObject = (x: unknown): x is Json => typeof x === 'object' && x !== null && !Array.isArray(x);
const numberOrNull = (x: unknown): number | null => (isNumber(x) ? x : null);
const stringOrNull = (x: unknown): string | null => (isString(x) ? x : null);

/** Return a cell record from its JSON form, or null when a required field is missing or mistyped. */
export function parseCell(raw: unknown): ICellRecord | null {
  if (!isObject(raw) || !isNumber(raw.started_at) || !isNumber(raw.duration_s) || !isNumber(raw.energy_j)) {
    return null;
  }
  const components: Record<string, number> = {};
  if (isObject(raw.components)) {
    for (const [name, joules] of Object.entries(raw.components)) {
      if (isNumber(joules)) {
        components[name] = joules;
      }
    }
  }
  return {
    executionCount: isNumber(raw.execution_count) ? raw.execution_count : null,
    cellId: stringOrNull(raw.cell_id),
    sourcePreview: isString(raw.source_preview) ? raw.source_preview : '',
    success: raw.success !== false,
    error: stringOrNull(raw.error),
    startedAt: raw.started_at,
    durationS: raw.duration_s,
    energyJ: raw.energy_j,
    components,
    estimated: raw.estimated === true,
    avgPowerW: numberOrNull(raw.avg_power_w),
    peakPowerW: numberOrNull(raw.peak_power_w),
    co2eG: numberOrNull(raw.co2e_g)
  };
}

/** A sample `[t0, t1, total W, [W per component]]` is valid when its times and total are numbers. */
function validSample(raw: unknown): raw is [number, number, number, unknown[]] {
  return (
    Array.isArray(raw) &&
    raw.length === 4 &&
    isNumber(raw[0]) &&
    isNumber(raw[1]) &&
    raw[0] <= raw[1] &&
    isNumber(raw[2]) &&
    Array.isArray(raw[3])
  );
}

function parseGrid(raw: unknown): IGrid | null {
  if (!isObject(raw) || !isNumber(raw.g_per_kwh)) {
    return null;
  }
  return {
    region: isString(raw.region) ? raw.region : '',
    name: isString(raw.name) ? raw.name : '',
    gPerKwh: raw.g_per_kwh,
    pue: isNumber(raw.pue) ? raw.pue : 1,
    source: isString(raw.source) ? raw.source : '',
    origin: isString(raw.origin) ? raw.origin : ''
  };
}

/**
 * Samples in columns (plain arrays of numbers: appending is cheap, and the chart finds its window
 * by binary search over `t1`). Old samples are dropped in batches, so trimming costs O(1) amortised.
 */
export class SampleColumns {
  t0: number[] = [];
  t1: number[] = [];
  totalW: number[] = [];
  /** W per component, in the order of the model's `components`; null where a component failed. */
  watts: Array<Array<number | null>> = [];
  /** Bumped whenever samples are dropped (a trim or a clear), so that views know to redraw whole. */
  generation = 0;

  get length(): number {
    return this.t1.length;
  }

  get lastT1(): number {
    return this.t1.length ? this.t1[this.t1.length - 1] : -Infinity;
  }

  push(t0: number, t1: number, totalW: number, watts: Array<number | null>): void {
    this.t0.push(t0);
    this.t1.push(t1);
    this.totalW.push(totalW);
    this.watts.push(watts);
  }

  /** Drop samples that ended before `oldest`, in batches of at least `batch` to stay amortised. */
  trim(oldest: number, batch: number): void {
    if (!this.t1.length || this.t1[0] >= oldest) {
      return;
    }
    const cut = this.firstEndingAfter(oldest);
    if (cut >= batch || cut === this.t1.length) {
      this.t0.splice(0, cut);
      this.t1.splice(0, cut);
      this.totalW.splice(0, cut);
      this.watts.splice(0, cut);
      this.generation++;
    }
  }

  /** Return the index of the first sample with t1 >= t (binary search). */
  firstEndingAfter(t: number): number {
    let low = 0;
    let high = this.t1.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (this.t1[mid] < t) {
        low = mid + 1;
      } else {
        high = mid;
      }
    }
    return low;
  }

  clear(): void {
    this.t0 = [];
    this.t1 = [];
    this.totalW = [];
    this.watts = [];
    this.generation++;
  }
}

/** The state of one kernel session's stream. */
export class StreamModel {
  /** The kernel-side stream's session (new at every `%load_ext` and kernel start). */
  session: string | null = null;
  /** The last message's sequence number, and how many were missed (gaps in `seq`). */
  seq = 0;
  lost = 0;
  busy = false;
  components: string[] = [];
  /** Per component: true estimated, false measured, null unknown (joined after the last snapshot). */
  estimated: Array<boolean | null> = [];
  readonly samples = new SampleColumns();
  /** Measured cells, oldest first. */
  cells: ICellRecord[] = [];
  totals: ITotals | null = null;
  grid: IGrid | null = null;
  /** Kernel time (Unix s) of the last message, and whether a snapshot arrived in this session. */
  lastMessageT = 0;
  hasSnapshot = false;
  /** Bumped whenever `cells` changes, so views redraw their table only then. */
  cellsVersion = 0;

  readonly historyS: number;
  readonly cellsKept: number;
  private readonly _log: (message: string) => void;
  private readonly _versionsNoted = new Set<unknown>();
  private readonly _cellKeys = new Set<string>();

  constructor(options: IModelOptions = {}) {
    this.historyS = options.historyS ?? 3600;
    this.cellsKept = options.cellsKept ?? 1000;
    this._log = options.log ?? (message => console.info(message));
  }

  /** True once any message of this session arrived. */
  get hasData(): boolean {
    return this.session !== null;
  }

  /** Forget everything: a kernel restart, or another kernel. */
  reset(): void {
    this.session = null;
    this.seq = 0;
    this.lost = 0;
    this.busy = false;
    this.components = [];
    this.estimated = [];
    this.samples.clear();
    this.cells = [];
    this._cellKeys.clear();
    this.totals = null;
    this.grid = null;
    this.lastMessageT = 0;
    this.hasSnapshot = false;
    this.cellsVersion++;
  }

  /** Fold in one raw message; unknown versions are ignored with one console note per version. */
  apply(raw: unknown): ApplyResult {
    if (!isObject(raw)) {
      this._log('greenjupyter: ignoring a stream message that is not an object');
      return 'invalid';
    }
    if (raw.v !== VERSION) {
      if (!this._versionsNoted.has(raw.v)) {
        this._versionsNoted.add(raw.v);
        this._log(
          `greenjupyter: ignoring stream messages of schema version ${JSON.stringify(raw.v)}; ` +
            `this panel reads version ${VERSION} (install matching greenjupyter versions in the kernel and in JupyterLab)`
        );
      }
      return 'ignored';
    }
    const kind = raw.kind;
    if ((kind !== 'update' && kind !== 'snapshot') || !isNumber(raw.seq) || !isString(raw.session) || !isNumber(raw.t)) {
      this._log('greenjupyter: ignoring a stream message without a valid kind, seq, session or t');
      return 'invalid';
    }
    if (raw.samples !== undefined && !Array.isArray(raw.samples)) {
      this._log('greenjupyter: ignoring a stream message whose samples are not a list');
      return 'invalid';
    }
    if (raw.cells !== undefined && !Array.isArray(raw.cells)) {
      this._log('greenjupyter: ignoring a stream message whose cells are not a list');
      return 'invalid';
    }
    if (raw.session !== this.session) {
      this.reset();
      this.session = raw.session;
    } else if (raw.seq > this.seq + 1) {
      this.lost += raw.seq - this.seq - 1;
    }
    this.seq = raw.seq;
    this.lastMessageT = raw.t;
    if (typeof raw.busy === 'boolean') {
      this.busy = raw.busy;
    }
    if (Array.isArray(raw.components) && raw.components.every(isString)) {
      this._setComponents(raw.components as string[], kind === 'snapshot' ? raw.estimated : undefined);
    }
    this._addCells((raw.cells as unknown[] | undefined) ?? []);
    this._addSamples((raw.samples as unknown[] | undefined) ?? []);
    // The kernel restates its totals whenever they change (updates with cells, and snapshots).
    if (raw.totals !== undefined) {
      this._setTotals(raw.totals);
    }
    if (kind === 'snapshot') {
      this.hasSnapshot = true;
      this.grid = parseGrid(raw.grid) ?? this.grid;
    }
    return 'applied';
  }

  /** Return the newest sample's total and per-component watts, or null before the first sample. */
  latest(): { t1: number; totalW: number; watts: Array<number | null> } | null {
    const n = this.samples.length;
    if (!n) {
      return null;
    }
    return { t1: this.samples.t1[n - 1], totalW: this.samples.totalW[n - 1], watts: this.samples.watts[n - 1] };
  }

  private _setComponents(names: string[], estimated: unknown): void {
    const flags = Array.isArray(estimated)
      ? names.map(name => (estimated as unknown[]).includes(name))
      : names.map(name => {
          const before = this.components.indexOf(name);
          return before >= 0 ? this.estimated[before] : null;
        });
    this.components = names;
    this.estimated = flags;
  }

  private _addSamples(raw: unknown[]): void {
    const samples = this.samples;
    const width = this.components.length;
    let dropped = 0;
    for (const sample of raw) {
      if (!validSample(sample)) {
        dropped++;
        continue;
      }
      if (sample[1] <= samples.lastT1) {
        continue; // a snapshot repeats what updates already brought
      }
      const watts = sample[3].map(w => (isNumber(w) ? w : null));
      if (width && watts.length !== width) {
        dropped++;
        continue;
      }
      samples.push(sample[0], sample[1], sample[2], watts);
    }
    if (dropped) {
      this._log(`greenjupyter: ignored ${dropped} malformed power sample(s)`);
    }
    samples.trim(samples.lastT1 - this.historyS, 256);
  }

  private _addCells(raw: unknown[]): void {
    const added: ICellRecord[] = [];
    for (const item of raw) {
      const cell = parseCell(item);
      if (!cell) {
        this._log('greenjupyter: ignored a malformed cell record');
        continue;
      }
      const key = `${cell.startedAt}|${cell.executionCount}|${cell.cellId}`;
      if (this._cellKeys.has(key)) {
        continue;
      }
      this._cellKeys.add(key);
      added.push(cell);
    }
    if (added.length) {
      this.cells = this.cells.concat(added);
      this.cells.sort((a, b) => a.startedAt - b.startedAt);
      if (this.cells.length > this.cellsKept) {
        for (const old of this.cells.splice(0, this.cells.length - this.cellsKept)) {
          this._cellKeys.delete(`${old.startedAt}|${old.executionCount}|${old.cellId}`);
        }
      }
      this.cellsVersion++;
    }
  }

  private _setTotals(raw: unknown): void {
    if (!isObject(raw) || !isNumber(raw.energy_j)) {
      return;
    }
    this.totals = {
      cells: isNumber(raw.cells) ? raw.cells : 0,
      durationS: isNumber(raw.duration_s) ? raw.duration_s : 0,
      energyJ: raw.energy_j,
      co2eG: numberOrNull(raw.co2e_g),
      equivalents: this._parseEquivalents(raw.equivalents),
      idleJ: numberOrNull(raw.idle_j),
      idleS: numberOrNull(raw.idle_s)
    };
  }

  /** Keep the `{key, text}` items whose key and text are strings; drop anything else. */
  private _parseEquivalents(raw: unknown): IEquivalent[] {
    if (raw === undefined) {
      return [];
    }
    if (!Array.isArray(raw)) {
      this._log('greenjupyter: ignored equivalents that are not a list');
      return [];
    }
    const kept: IEquivalent[] = [];
    for (const item of raw) {
      if (isObject(item) && isString(item.key) && isString(item.text)) {
        kept.push({ key: item.key, text: item.text });
      }
    }
    if (kept.length < raw.length) {
      this._log(`greenjupyter: ignored ${raw.length - kept.length} malformed equivalent(s)`);
    }
    return kept;
  }
}
