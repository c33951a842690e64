/**
 * The power timeline, drawn on a canvas by hand: total watts over the chart window, with the spans
 * of executed cells shaded and labelled by execution count. Pixel columns are fixed slices of time,
 * so a column's pixels, once its neighbours are complete, never change: they are kept on a layer
 * that shifts left a pixel at a time, and a redraw traces only the columns settled since the last
 * one and the few newest. Everything else (spans, labels, axes) is a few rectangles and words.
 */
import { formatAgo, formatPower } from './format';
import { StreamModel } from './model';

export interface IChartColors {
  background: string;
  grid: string;
  text: string;
  line: string;
  fill: string;
  cell: string;
  cellAlt: string;
  cellFailed: string;
  font: string;
}

export const DEFAULT_COLORS: IChartColors = {
  background: '#ffffff',
  grid: 'rgba(0,0,0,0.12)',
  text: 'rgba(0,0,0,0.6)',
  line: '#2e7d32',
  fill: 'rgba(46,125,50,0.18)',
  cell: 'rgba(25,118,210,0.13)',
  cellAlt: 'rgba(25,118,210,0.22)',
  cellFailed: 'rgba(211,47,47,0.18)',
  font: '10px sans-serif'
};

const PAD_LEFT = 48; // room for the top value, e.g. "250 mW"
const PAD_RIGHT = 6;
const PAD_TOP = 14;
const PAD_BOTTOM = 14;

/** Return a round number ≥ `value` for the axis: 1, 2, 2.5, 5 times a power of ten. */
export function niceCeiling(value: number): number {
  if (!(value > 0) || !Number.isFinite(value)) {
    return 1;
  }
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= value * 0.9999) {
      return step * power;
    }
  }
  return 10 * power;
}

/**
 * The window to show: the session so far (its oldest sample or cell), rounded up to whole minutes,
 * at most `maxS`, so that a young session fills the chart instead of a sliver at its right edge.
 */
export function chartWindow(model: StreamModel, maxS: number): number {
  const samples = model.samples;
  if (!samples.length) {
    return Math.min(60, maxS);
  }
  let oldest = samples.t0[0];
  if (model.cells.length) {
    oldest = Math.min(oldest, model.cells[0].startedAt);
  }
  const ageS = samples.lastT1 - oldest;
  return Math.min(maxS, Math.max(1, Math.ceil(ageS / 60)) * 60);
}

export class PowerChart {
  readonly canvas: HTMLCanvasElement;
  colors: IChartColors = DEFAULT_COLORS;
  private _max = new Float64Array(0);
  private _sum = new Float64Array(0);
  private _count = new Uint32Array(0);

  private _ctx: CanvasRenderingContext2D | null;
  // The plot layer: two canvases, the current one and the one it is shifted into.
  private _layers: HTMLCanvasElement[] = [];
  private _layerKey = '';
  private _layerModel: StreamModel | null = null;
  private _layerBase = 0;

  constructor(canvas: HTMLCanvasElement) {
    this.canvas = canvas;
    // Opaque: the chart paints its own background, and the compositor skips blending.
    this._ctx = canvas.getContext('2d', { alpha: false });
  }

  /**
   * Draw `model` over the last `windowS` seconds before its newest sample, at `cssWidth` x
   * `cssHeight` CSS pixels (the caller measures the layout once per resize, not per draw).
   */
  draw(model: StreamModel, windowS: number, cssWidth: number, cssHeight: number, ratio = 1): void {
    const canvas = this.canvas;
    const width = Math.max(1, Math.round(cssWidth * ratio));
    const height = Math.max(1, Math.round(cssHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const ctx = this._ctx;
    if (!ctx) {
      return;
    }
    const c = this.colors;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.fillStyle = c.background;
    ctx.fillRect(0, 0, cssWidth, cssHeight);
    ctx.font = c.font;
    ctx.textBaseline = 'middle';

    const plotW = Math.max(1, Math.floor(cssWidth - PAD_LEFT - PAD_RIGHT));
    const plotH = Math.max(1, cssHeight - PAD_TOP - PAD_BOTTOM);
    const samples = model.samples;
    const n = samples.length;
    const newest = n ? samples.t1[n - 1] : model.lastMessageT;
    // Column k holds the samples ending in [k, k + 1) x columnS since 1970; `base` is the leftmost
    // shown, so the newest sample is always in the last column and the chart steps a pixel at a time.
    const columnS = windowS / plotW;
    const base = Math.floor(newest / columnS) - (plotW - 1);
    const start = base * columnS;
    const end = start + windowS;
    const xOf = (t: number): number => PAD_LEFT + (t / columnS - base);

    // Per pixel column: peak and mean of the total watts (NaN peak where no sample ends in it), for
    // the shown columns and MARGIN more on the left, whose line reaches into the first ones.
    const columns = plotW + MARGIN;
    if (this._max.length !== columns) {
      this._max = new Float64Array(columns);
      this._sum = new Float64Array(columns);
      this._count = new Uint32Array(columns);
    }
    const hi = this._max;
    const sums = this._sum;
    const counts = this._count;
    hi.fill(NaN);
    sums.fill(0);
    counts.fill(0);
    let top = 0;
    const first = samples.firstEndingAfter((base - MARGIN) * columnS);
    const t1 = samples.t1;
    const total = samples.totalW;
    for (let i = first; i < n; i++) {
      const w = total[i];
      const col = Math.min(Math.max(Math.floor(t1[i] / columnS) - base, -MARGIN), plotW - 1);
      const k = col + MARGIN;
      sums[k] += w;
      counts[k]++;
      const high = hi[k];
      if (high !== high || w > high) {
        hi[k] = w;
      }
      if (col >= 0 && w > top) {
        top = w;
      }
    }
    const yMax = niceCeiling(top);
    const yOf = (w: number): number => PAD_TOP + plotH - (w / yMax) * plotH;

    // Cells: shaded spans, labelled [n] where there is room (label width estimated from its
    // length: no text measuring per cell). Plain fillRect: a rectangle is the rasteriser's fast path.
    const cells = model.cells;
    let kFirst = cells.length;
    while (kFirst > 0 && cells[kFirst - 1].startedAt + cells[kFirst - 1].durationS >= start - 3600) {
      kFirst--; // cells are sorted by start: walk back only over the recent ones
    }
    const colours = [c.cell, c.cellAlt, c.cellFailed];
    const labels: Array<[string, number]> = [];
    const charWidth = 6;
    let labelEnd = -Infinity;
    // Spans closer than a pixel are merged into one rectangle: an hour of short cells costs a few fills.
    let run = { x0: 0, x1: -Infinity, colour: '' };
    const flush = (): void => {
      if (run.x1 > run.x0) {
        ctx.fillStyle = run.colour;
        ctx.fillRect(run.x0, PAD_TOP, run.x1 - run.x0, plotH);
      }
    };
    for (let k = kFirst; k < cells.length; k++) {
      const cell = cells[k];
      const cellEnd = cell.startedAt + cell.durationS;
      if (cellEnd < start || cell.startedAt > end) {
        continue;
      }
      const x0 = Math.max(PAD_LEFT, xOf(cell.startedAt));
      const x1 = Math.min(PAD_LEFT + plotW, Math.max(x0 + 1, xOf(cellEnd)));
      const colour = colours[!cell.success ? 2 : k % 2];
      const narrow = x1 - x0 < 3 || run.x1 - run.x0 < 3;
      if (x0 - run.x1 < 1 && (colour === run.colour || narrow)) {
        run.x1 = Math.max(run.x1, x1);
      } else {
        flush();
        run = { x0, x1, colour };
      }
      if (cell.executionCount !== null) {
        const label = `[${cell.executionCount}]`;
        const half = (label.length * charWidth) / 2;
        const centre = Math.min(Math.max((x0 + x1) / 2, PAD_LEFT + half), PAD_LEFT + plotW - half);
        if (centre - half > labelEnd + 2) {
          labels.push([label, centre]);
          labelEnd = centre + half;
        }
      }
    }
    flush();
    ctx.fillStyle = c.text;
    ctx.textAlign = 'center';
    for (const [label, x] of labels) {
      ctx.fillText(label, x, PAD_TOP / 2);
    }

    // Axes: a baseline, a middle line, the top value; the window's age and "now".
    ctx.strokeStyle = c.grid;
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (const w of [0, yMax / 2, yMax]) {
      const y = Math.round(yOf(w)) + 0.5;
      ctx.moveTo(PAD_LEFT, y);
      ctx.lineTo(PAD_LEFT + plotW, y);
    }
    ctx.stroke();
    ctx.fillStyle = c.text;
    ctx.textAlign = 'right';
    ctx.fillText(formatPower(yMax), PAD_LEFT - 4, yOf(yMax));
    ctx.fillText('0', PAD_LEFT - 4, yOf(0));
    ctx.textAlign = 'left';
    ctx.fillText(formatAgo(windowS), PAD_LEFT, cssHeight - PAD_BOTTOM / 2);
    ctx.textAlign = 'right';
    ctx.fillText('now', PAD_LEFT + plotW, cssHeight - PAD_BOTTOM / 2);

    // The area under each column's peak and a line through each column's mean. Columns up to
    // `settled` have their final pixels; the rest change with the newest samples.
    const plot: IPlot = { ratio, plotH, yOf, hi, sums, counts, colors: c };
    const last = plotW - 1;
    const settled = last - 1 - MARGIN;
    // A layer shifted by a fraction of a device pixel would blur: fractional ratios redraw whole.
    const geometry = `${width}x${height}|${windowS}|${yMax}|${c.fill}|${c.line}`;
    const layer = Number.isInteger(ratio) && settled >= 0 ? this._layer(model, base, settled, geometry, plot) : null;
    if (layer) {
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.drawImage(layer, 0, 0);
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      trace(ctx, plot, settled + 1, last);
    } else {
      trace(ctx, plot, 0, last);
    }
  }

  /**
   * Bring the layer of settled columns (0 to `settled`) up to date for `base` and return it; null
   * where no canvas can be made. It is redrawn whole when the geometry, the scale, the colours, the
   * model or its kept samples (a reset, a trim) changed, or when it would shift by its whole width.
   */
  private _layer(model: StreamModel, base: number, settled: number, geometry: string, plot: IPlot): HTMLCanvasElement | null {
    if (this._layers.length === 0) {
      // The layer lives where the chart does (GPU or main memory), so compositing never crosses over.
      const willReadFrequently = this._ctx?.getContextAttributes?.().willReadFrequently ?? false;
      for (let k = 0; k < 2; k++) {
        const layer = this.canvas.ownerDocument.createElement('canvas');
        if (!layer.getContext('2d', { willReadFrequently })) {
          return null;
        }
        this._layers.push(layer);
      }
    }
    const key = `${geometry}|${model.samples.generation}`;
    const shift = base - this._layerBase;
    let from = 0;
    if (key === this._layerKey && model === this._layerModel && shift >= 0 && shift <= settled) {
      if (shift === 0) {
        return this._layers[0];
      }
      // Shift left by whole pixels into the spare canvas; then trace the columns the shift settled.
      const [current, spare] = this._layers;
      const ctx = spare.getContext('2d')!;
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.clearRect(0, 0, spare.width, spare.height);
      ctx.drawImage(current, -shift * plot.ratio, 0);
      ctx.clearRect(0, 0, PAD_LEFT * plot.ratio, spare.height);
      this._layers = [spare, current];
      from = settled - shift + 1;
    } else {
      for (const layer of this._layers) {
        layer.width = this.canvas.width; // also clears it
        layer.height = this.canvas.height;
      }
    }
    const ctx = this._layers[0].getContext('2d')!;
    ctx.setTransform(plot.ratio, 0, 0, plot.ratio, 0, 0);
    trace(ctx, plot, from, settled);
    this._layerKey = key;
    this._layerModel = model;
    this._layerBase = base;
    return this._layers[0];
  }
}

/** Columns on either side of a pixel column whose segments can reach into it (line width 1.5). */
const MARGIN = 2;

interface IPlot {
  ratio: number;
  plotH: number;
  yOf: (w: number) => number;
  /** Per column from -MARGIN: peak, sum and count of the total watts. */
  hi: Float64Array;
  sums: Float64Array;
  counts: Uint32Array;
  colors: IChartColors;
}

/**
 * Paint the pixel columns `from` to `to` exactly as one pass over every column would: the area
 * under the peaks and the line through the means are traced from the columns around them too
 * (MARGIN beyond, and on to the nearest holding samples across a gap), then clipped to their pixels.
 * Two simple polylines: a zigzag through each column's min and max costs the rasteriser much more.
 */
function trace(ctx: CanvasRenderingContext2D, plot: IPlot, from: number, to: number): void {
  const { hi, sums, counts, yOf } = plot;
  const valid = (col: number): boolean => hi[col + MARGIN] === hi[col + MARGIN];
  const last = hi.length - MARGIN - 1;
  let begin = Math.max(-MARGIN, from - MARGIN);
  while (begin > -MARGIN && !valid(begin)) {
    begin--;
  }
  let end = Math.min(last, to + MARGIN);
  while (end < last && !valid(end)) {
    end++;
  }
  const area = new Path2D();
  const line = new Path2D();
  let firstX = NaN;
  let lastX = NaN;
  for (let col = begin; col <= end; col++) {
    if (!valid(col)) {
      continue;
    }
    const k = col + MARGIN;
    const x = PAD_LEFT + col + 0.5;
    const yMean = yOf(sums[k] / counts[k]);
    if (firstX !== firstX) {
      area.moveTo(x, yOf(0));
      line.moveTo(x, yMean);
      firstX = x;
    } else {
      line.lineTo(x, yMean);
    }
    area.lineTo(x, yOf(hi[k]));
    lastX = x;
  }
  if (firstX !== firstX) {
    return;
  }
  area.lineTo(lastX, yOf(0));
  area.closePath();
  ctx.save();
  ctx.beginPath();
  ctx.rect(PAD_LEFT + from, 0, to - from + 1, PAD_TOP + plot.plotH + 1);
  ctx.clip();
  ctx.fillStyle = plot.colors.fill;
  ctx.fill(area);
  ctx.strokeStyle = plot.colors.line;
  ctx.lineWidth = 1.5;
  ctx.lineJoin = 'round';
  ctx.stroke(line);
  ctx.restore();
}
