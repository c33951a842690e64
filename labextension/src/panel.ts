/**
 * The sidebar view: live watts per component, the power chart, session totals and the table of
 * measured cells for the active notebook. Plain DOM: everything that came from the kernel goes in
 * through `textContent`, never as HTML. Renders are coalesced into one per animation frame.
 */
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { chartWindow, DEFAULT_COLORS, IChartColors, PowerChart } from './chart';
import {
  EnergyUnit,
  firstLine,
  formatCO2e,
  formatDuration,
  formatEnergy,
  formatIntensity,
  formatPower
} from './format';
import { betweenCells } from './idle';
import { ICellRecord } from './model';
import { KernelWatch, NotebookFollower, WatchState } from './tracker';

export const LEAF_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
  '<path class="jp-icon3" fill="#616161" d="M17 8C8 10 5.9 16.17 3.82 21.34l1.89.66.95-2.3c.48.17.98.3 1.34.3C19 20 22 3 22 3c-1 2-8 ' +
  '2.25-13 3.25S2 11.5 2 13.5s1.75 3.75 1.75 3.75C7 8 17 8 17 8z"/></svg>';

export const leafIcon = new LabIcon({ name: 'greenjupyter:leaf', svgstr: LEAF_SVG });

/** Settings the panel reads (mirrors labextension/schema/plugin.json). */
export interface IPanelSettings {
  energyUnit: EnergyUnit;
  chartWindowMinutes: number;
}

type SortKey = 'order' | 'duration' | 'energy' | 'co2e';

const COLUMNS: ReadonlyArray<{ key: SortKey; label: string; title: string }> = [
  { key: 'order', label: '#', title: 'Execution count (in the order the cells ran)' },
  { key: 'order', label: 'Cell', title: 'First line of the cell' },
  { key: 'duration', label: 'Time', title: 'Duration' },
  { key: 'energy', label: 'Energy', title: 'Energy' },
  { key: 'co2e', label: 'CO2e', title: 'Emissions, CO2 equivalent' }
];

const TABLE_ROWS = 200;

/** Return the message for a state without live data, as plain text parts (code parts marked). */
export function stateMessage(state: WatchState): Array<{ text: string; code?: boolean }> {
  switch (state.kind) {
    case 'no-notebook':
      return [{ text: 'Open a notebook to see how much energy its cells use.' }];
    case 'no-kernel':
      return [{ text: 'This notebook has no kernel. Start one, then run ' }, { text: '%load_ext greenjupyter', code: true }, { text: '.' }];
    case 'not-python':
      return [{ text: `greenjupyter measures Python (IPython) kernels; this notebook's kernel runs ${state.language || 'another language'}.` }];
    case 'restarted':
      return [
        { text: 'The kernel restarted, so measuring stopped. Run ' },
        { text: '%load_ext greenjupyter', code: true },
        { text: ' again to go on.' }
      ];
    case 'busy-waiting':
      return [
        { text: 'The kernel is busy; waiting for data. If nothing comes, run ' },
        { text: '%load_ext greenjupyter', code: true },
        { text: ' once this cell is done.' }
      ];
    case 'not-loaded':
      return [
        { text: 'Nothing measured yet. Run ' },
        { text: '%load_ext greenjupyter', code: true },
        { text: ' in a cell of this notebook: every cell after it is measured.' }
      ];
    case 'live':
      return [];
  }
}

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

export class GreenPanel extends Widget {
  settings: IPanelSettings = { energyUnit: 'auto', chartWindowMinutes: 10 };
  /** Durations of the last renders in ms (a bounded ring), for the benchmark and for curious users. */
  readonly renderTimes: number[] = [];

  private _watch: KernelWatch | null = null;
  private _frame = 0;
  private _renderedCells = -1;
  private _sort: { key: SortKey; descending: boolean } = { key: 'order', descending: true };
  private _chart: PowerChart;
  private _chartWidth = 0;
  private _chartHeight = 140;
  private _resize: ResizeObserver | null = null;

  private _title = element('div', 'gj-title');
  private _state = element('div', 'gj-state');
  private _body = element('div', 'gj-body');
  private _nowValue = element('span', 'gj-now-value', '–');
  private _busy = element('span', 'gj-busy');
  private _components = element('tbody');
  private _chartBox = element('div', 'gj-chart');
  private _totals = element('dl', 'gj-totals');
  private _cellsHead = element('tr');
  private _cellsBody = element('tbody');
  private _lost = element('div', 'gj-note');

  constructor(follower: NotebookFollower) {
    super();
    this.id = 'greenjupyter-panel';
    this.addClass('gj-panel');
    this.title.icon = leafIcon;
    this.title.caption = 'Energy and CO2e (greenjupyter)';
    const canvas = element('canvas', 'gj-canvas');
    canvas.setAttribute('role', 'img');
    canvas.setAttribute('aria-label', 'Power over time, executed cells shaded');
    this._chart = new PowerChart(canvas);
    this._build(canvas);
    follower.activeChanged.connect((_, watch) => this._follow(watch), this);
    this._follow(follower.active);
  }

  /** The watch shown now (the active notebook's). */
  get watch(): KernelWatch | null {
    return this._watch;
  }

  applySettings(settings: IPanelSettings): void {
    this.settings = settings;
    this._renderedCells = -1;
    this.scheduleRender();
  }

  scheduleRender(): void {
    if (!this._frame && this.isAttached) {
      this._frame = requestAnimationFrame(() => {
        this._frame = 0;
        this.render();
      });
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    cancelAnimationFrame(this._frame);
    this._resize?.disconnect();
    this._follow(null);
    super.dispose();
  }

  /** Draw everything now (normally called once per frame through `scheduleRender`). */
  render(): void {
    const began = performance.now();
    const watch = this._watch;
    const state: WatchState = watch ? watch.state : { kind: 'no-notebook' };
    this._title.textContent = watch ? watch.panel.title.label : 'No notebook';
    this._renderState(state);
    if (watch && state.kind === 'live') {
      this._renderLive(watch);
      this._renderChart(watch);
      this._renderTotals(watch);
      if (this._renderedCells !== watch.model.cellsVersion) {
        this._renderCells(watch);
        this._renderedCells = watch.model.cellsVersion;
      }
    }
    const spent = performance.now() - began;
    this.renderTimes.push(spent);
    if (this.renderTimes.length > 600) {
      this.renderTimes.splice(0, 300);
    }
  }

  protected onAfterAttach(): void {
    this._resize = new ResizeObserver(entries => {
      const box = entries[entries.length - 1].contentRect;
      if (Math.round(box.width) !== this._chartWidth) {
        this._chartWidth = Math.round(box.width);
        this._chart.colors = this._themeColors();
        this.scheduleRender();
      }
    });
    this._resize.observe(this._chartBox);
    this._renderedCells = -1;
    this.scheduleRender();
  }

  protected onBeforeDetach(): void {
    this._resize?.disconnect();
    this._resize = null;
  }

  protected onAfterShow(): void {
    this.scheduleRender();
  }

  private _follow(watch: KernelWatch | null): void {
    if (this._watch) {
      this._watch.changed.disconnect(this.scheduleRender, this);
    }
    this._watch = watch;
    if (watch) {
      watch.changed.connect(this.scheduleRender, this);
    }
    this._renderedCells = -1;
    this.scheduleRender();
  }

  private _build(canvas: HTMLCanvasElement): void {
    const header = element('div', 'gj-header');
    const leaf = element('span', 'gj-leaf');
    leafIcon.element({ container: leaf });
    header.append(leaf, this._title);

    const live = element('section', 'gj-live');
    const now = element('div', 'gj-now');
    now.append(this._nowValue, this._busy);
    const components = element('table', 'gj-components');
    components.append(this._components);
    live.append(element('h3', undefined, 'Now'), now, components);

    this._chartBox.append(canvas);
    const chart = element('section', 'gj-chart-section');
    chart.append(element('h3', undefined, 'Power'), this._chartBox);

    const totals = element('section', 'gj-totals-section');
    totals.append(element('h3', undefined, 'This kernel session'), this._totals);

    const cells = element('section', 'gj-cells-section');
    const table = element('table', 'gj-cells');
    const head = element('thead');
    head.append(this._cellsHead);
    table.append(head, this._cellsBody);
    for (const column of COLUMNS) {
      const th = element('th', column.key === 'co2e' ? 'gj-co2e' : undefined);
      th.title = column.title;
      const button = element('button', 'gj-sort', column.label);
      button.type = 'button';
      button.dataset.sort = column.key;
      button.addEventListener('click', () => this._sortBy(column.key));
      th.append(button);
      this._cellsHead.append(th);
    }
    cells.append(element('h3', undefined, 'Cells'), table, this._lost);

    this._body.append(live, chart, totals, cells);
    this.node.append(header, this._state, this._body);
  }

  private _renderState(state: WatchState): void {
    this.node.dataset.state = state.kind;
    const parts = stateMessage(state);
    this._state.hidden = parts.length === 0;
    this._body.hidden = state.kind !== 'live';
    const key = parts.map(p => p.text).join('');
    if (this._state.dataset.key === key) {
      return;
    }
    this._state.dataset.key = key;
    this._state.replaceChildren(
      ...parts.map(part => (part.code ? element('code', undefined, part.text) : document.createTextNode(part.text)))
    );
  }

  private _renderLive(watch: KernelWatch): void {
    const model = watch.model;
    const latest = model.latest();
    this._nowValue.textContent = latest ? formatPower(latest.totalW) : '–';
    this._busy.textContent = model.busy ? 'cell running' : 'idle';
    this._busy.classList.toggle('gj-running', model.busy);
    const rows = this._components.rows;
    model.components.forEach((name, i) => {
      let row = rows[i];
      if (!row) {
        row = this._components.insertRow();
        row.insertCell().className = 'gj-component';
        row.insertCell().className = 'gj-watts';
        row.insertCell().append(element('span', 'gj-badge'));
      }
      row.cells[0].textContent = name;
      const watts = latest ? latest.watts[i] : null;
      row.cells[1].textContent = watts === null || watts === undefined ? 'failed' : formatPower(watts);
      const flag = model.estimated[i];
      const badge = row.cells[2].firstChild as HTMLElement;
      badge.textContent = flag === null ? '?' : flag ? 'estimated' : 'measured';
      badge.className = `gj-badge ${flag ? 'gj-estimated' : flag === false ? 'gj-measured' : ''}`;
      badge.title = flag
        ? 'Modelled from CPU time / memory, not read from a hardware counter'
        : flag === false
          ? 'Read from a hardware counter'
          : 'Known at the next snapshot';
    });
    while (rows.length > model.components.length) {
      this._components.deleteRow(rows.length - 1);
    }
  }

  private _renderChart(watch: KernelWatch): void {
    if (!this._chartWidth) {
      this._chartWidth = Math.round(this._chartBox.clientWidth);
      this._chart.colors = this._themeColors();
    }
    if (this._chartWidth > 0) {
      const windowS = chartWindow(watch.model, Math.max(1, this.settings.chartWindowMinutes) * 60);
      this._chart.draw(watch.model, windowS, this._chartWidth, this._chartHeight, window.devicePixelRatio || 1);
    }
  }

  private _renderTotals(watch: KernelWatch): void {
    const { totals, grid } = watch.model;
    const unit = this.settings.energyUnit;
    const items: Array<[string, string, string?]> = [];
    if (totals) {
      items.push(['Energy', formatEnergy(totals.energyJ, unit)]);
      items.push(['CO2e', formatCO2e(totals.co2eG)]);
      // The kernel's own wording, in the units it was set to: the same as %carbon.
      if (totals.equivalents.length) {
        items.push(['That is', totals.equivalents.map(e => e.text).join(', ')]);
      }
      items.push(['Cells', `${totals.cells} in ${formatDuration(totals.durationS)}`]);
      const idle = betweenCells(totals, unit);
      if (idle) {
        items.push(['Between cells', idle.text, idle.title]);
      }
    } else {
      items.push(['Totals', 'at the next snapshot (within 30 s)']);
    }
    if (grid) {
      items.push(['Grid', grid.name ? `${grid.name} (${grid.region})` : grid.region, grid.origin]);
      items.push(['Intensity', `${formatIntensity(grid.gPerKwh)}, PUE ${grid.pue}`, grid.source]);
    }
    const key = JSON.stringify(items);
    if (this._totals.dataset.key === key) {
      return;
    }
    this._totals.dataset.key = key;
    const nodes: HTMLElement[] = [];
    for (const [term, value, title] of items) {
      const dt = element('dt', undefined, term);
      const dd = element('dd', undefined, value);
      dd.dataset.field = term.toLowerCase();
      if (title) {
        dd.title = title;
      }
      nodes.push(dt, dd);
    }
    this._totals.replaceChildren(...nodes);
  }

  private _sortBy(key: SortKey): void {
    const same = this._sort.key === key;
    this._sort = { key, descending: same ? !this._sort.descending : true };
    this._renderedCells = -1;
    this.scheduleRender();
  }

  private _renderCells(watch: KernelWatch): void {
    const cells = watch.model.cells.slice();
    const value = (cell: ICellRecord): number => {
      switch (this._sort.key) {
        case 'duration':
          return cell.durationS;
        case 'energy':
          return cell.energyJ;
        case 'co2e':
          return cell.co2eG ?? -1;
        default:
          return cell.startedAt;
      }
    };
    const sign = this._sort.descending ? -1 : 1;
    cells.sort((a, b) => sign * (value(a) - value(b)));
    for (const th of Array.from(this._cellsHead.children)) {
      const button = th.firstChild as HTMLElement;
      const active = button.dataset.sort === this._sort.key && (this._sort.key !== 'order' || button.textContent === '#');
      th.setAttribute('aria-sort', active ? (this._sort.descending ? 'descending' : 'ascending') : 'none');
    }
    let costliest: ICellRecord | null = null;
    for (const cell of watch.model.cells) {
      if (!costliest || cell.energyJ > costliest.energyJ) {
        costliest = cell;
      }
    }
    const most = costliest ? costliest.energyJ : 0;
    const unit = this.settings.energyUnit;
    const rows: HTMLTableRowElement[] = [];
    for (const cell of cells.slice(0, TABLE_ROWS)) {
      const row = element('tr', 'gj-cell-row');
      row.tabIndex = 0;
      if (cell === costliest && watch.model.cells.length > 1) {
        row.classList.add('gj-costliest');
        row.title = 'The costliest cell';
      }
      if (!cell.success) {
        row.classList.add('gj-failed');
      }
      const count = element('td', 'gj-count', cell.executionCount === null ? '' : `[${cell.executionCount}]`);
      const source = element('td', 'gj-source', firstLine(cell.sourcePreview));
      source.title = cell.sourcePreview + (cell.error ? `\n(${cell.error})` : '');
      const duration = element('td', 'gj-num', formatDuration(cell.durationS));
      const energy = element('td', 'gj-num gj-energy');
      const bar = element('span', 'gj-bar');
      bar.style.width = `${most > 0 ? Math.max(1, Math.round((cell.energyJ / most) * 100)) : 0}%`;
      energy.append(bar, element('span', 'gj-energy-value', formatEnergy(cell.energyJ, unit)));
      energy.dataset.joules = String(cell.energyJ);
      energy.title = cell.estimated ? 'estimated' : 'measured';
      const co2e = element('td', 'gj-num gj-co2e', formatCO2e(cell.co2eG).replace(' CO2e', ''));
      row.append(count, source, duration, energy, co2e);
      const go = (): void => this._scrollTo(watch, cell);
      row.addEventListener('click', go);
      row.addEventListener('keydown', event => {
        if (event.key === 'Enter') {
          go();
        }
      });
      rows.push(row);
    }
    if (!rows.length) {
      const row = element('tr', 'gj-empty-row');
      const td = element('td', undefined, 'No measured cell yet: run a cell.');
      td.colSpan = COLUMNS.length;
      row.append(td);
      rows.push(row);
    }
    this._cellsBody.replaceChildren(...rows);
    const lost = watch.model.lost;
    this._lost.textContent = lost ? `${lost} stream message(s) were lost on the way; totals stay exact.` : '';
  }

  private _scrollTo(watch: KernelWatch, record: ICellRecord): void {
    const notebook = watch.panel.content;
    const widgets = notebook.widgets;
    let index = record.cellId ? widgets.findIndex(cell => cell.model.id === record.cellId) : -1;
    if (index < 0 && record.executionCount !== null) {
      index = widgets.findIndex(
        cell => cell.model.type === 'code' && (cell.model as { executionCount?: number | null }).executionCount === record.executionCount
      );
    }
    if (index < 0) {
      return;
    }
    notebook.activeCellIndex = index;
    void notebook.scrollToCell(widgets[index], 'center');
  }

  private _themeColors(): IChartColors {
    const style = getComputedStyle(this.node);
    const read = (name: string, fallback: string): string => style.getPropertyValue(name).trim() || fallback;
    return {
      ...DEFAULT_COLORS,
      background: read('--jp-layout-color1', DEFAULT_COLORS.background),
      text: read('--jp-ui-font-color2', DEFAULT_COLORS.text),
      grid: read('--jp-border-color2', DEFAULT_COLORS.grid),
      font: `10px ${read('--jp-ui-font-family', 'sans-serif')}`
    };
  }
}
