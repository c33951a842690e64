/**
 * The power timeline, drawn on a canvas by hand: total watts over the chart window, with the spans
 * of executed cells shaded and labelled by execution count. A redraw visits only the samples inside
 * the window (binary search for the first) and draws at most two points per pixel column, so an
 * hour of history at 4 samples/s stays well inside a frame.
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

const PAD_LEFT = 40;
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

export class PowerChart {
  readonly canvas: HTMLCanvasElement;
  colors: IChartColors = DEFAULT_COLORS;
  private _max = new Float64Array(0);
  private _sum = new Float64Array(0);
  private _count = new Uint32Array(0);

  private _ctx: CanvasRenderingContext2D | null;

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
    const end = n ? samples.t1[n - 1] : model.lastMessageT;
    const start = end - windowS;
    const xOf = (t: number): number => PAD_LEFT + ((t - start) / windowS) * plotW;

    // Per pixel column: peak and mean of the total watts (NaN peak where no sample ends in it).
    if (this._max.length !== plotW) {
      this._max = new Float64Array(plotW);
      this._sum = new Float64Array(plotW);
      this._count = new Uint32Array(plotW);
    }
    const hi = this._max;
    const sums = this._sum;
    const counts = this._count;
    hi.fill(NaN);
    sums.fill(0);
    counts.fill(0);
    let top = 0;
    const first = samples.firstEndingAfter(start);
    const t1 = samples.t1;
    const total = samples.totalW;
    const scale = plotW / windowS;
    for (let i = first; i < n; i++) {
      const w = total[i];
      let col = Math.floor((t1[i] - start) * scale);
      if (col >= plotW) {
        col = plotW - 1;
      } else if (col < 0) {
        col = 0;
      }
      sums[col] += w;
      counts[col]++;
      const high = hi[col];
      if (high !== high || w > high) {
        hi[col] = w;
      }
      if (w > top) {
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

    // The area under each column's peak, and a line through each column's mean: two simple
    // polylines (a zigzag through min and max in every column costs the rasteriser several times more).
    const area = new Path2D();
    const line = new Path2D();
    let firstX = -1;
    let lastX = 0;
    for (let col = 0; col < plotW; col++) {
      const peak = hi[col];
      if (peak !== peak) {
        continue;
      }
      const x = PAD_LEFT + col + 0.5;
      const yMean = yOf(sums[col] / counts[col]);
      if (firstX < 0) {
        area.moveTo(x, yOf(0));
        line.moveTo(x, yMean);
        firstX = x;
      } else {
        line.lineTo(x, yMean);
      }
      area.lineTo(x, yOf(peak));
      lastX = x;
    }
    if (firstX >= 0) {
      area.lineTo(lastX, yOf(0));
      area.closePath();
      ctx.fillStyle = c.fill;
      ctx.fill(area);
      ctx.strokeStyle = c.line;
      ctx.lineWidth = 1.5;
      ctx.stroke(line);
    }
  }
}
