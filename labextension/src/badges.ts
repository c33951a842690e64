/**
 * A small energy badge under each measured cell, like jupyterlab-execute-time's timing line.
 *
 * A badge belongs to one run of a cell, and sits on the cell only while the cell shows that run:
 * the same cell id and the execution count in its prompt. After a page reload the notebook is as
 * last saved while the kernel still has every record, so a cell may show an older run or none;
 * cleared outputs show none. Those records stay in the sidebar's table, not on the cells.
 * One `CellBadges` per notebook; every signal connection it makes is undone in `dispose`.
 */
import { Cell, ICellModel, ICodeCellModel } from '@jupyterlab/cells';
import { IDisposable } from '@lumino/disposable';
import { Signal } from '@lumino/signaling';
import { PanelLayout, Widget } from '@lumino/widgets';

import { badgeText, EnergyUnit } from './format';
import { ICellRecord } from './model';
import { KernelWatch } from './tracker';

/** The key of one run: the cell's id and the execution count Jupyter showed for it. */
function runKey(cellId: string, executionCount: number): string {
  return `${executionCount}:${cellId}`;
}

/** Return the records by run (records are oldest first: a later one of the same run wins). */
export function indexRuns(records: Iterable<ICellRecord>): Map<string, ICellRecord> {
  const runs = new Map<string, ICellRecord>();
  for (const record of records) {
    if (record.cellId && record.executionCount !== null) {
      runs.set(runKey(record.cellId, record.executionCount), record);
    }
  }
  return runs;
}

/** Return the record of the run a cell shows, or undefined when it shows none or one not measured. */
export function shownRun(
  runs: ReadonlyMap<string, ICellRecord>,
  cellId: string,
  executionCount: number | null
): ICellRecord | undefined {
  return executionCount === null ? undefined : runs.get(runKey(cellId, executionCount));
}

export class CellBadges implements IDisposable {
  private _badges = new Map<Cell, Widget>();
  private _runs = new Map<string, ICellRecord>();
  /** Placeholder cells (windowed notebooks render cells late) whose rendering is awaited. */
  private _awaited = new WeakSet<Cell>();
  private _seen = -1;
  private _enabled = true;
  private _unit: EnergyUnit = 'auto';
  private _isDisposed = false;

  constructor(private readonly _watch: KernelWatch) {
    _watch.changed.connect(this._update, this);
    _watch.panel.content.model?.cells.changed.connect(this._render, this);
    this._update();
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  configure(enabled: boolean, unit: EnergyUnit): void {
    this._enabled = enabled;
    this._unit = unit;
    this._render();
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    // The watch's, the notebook's and every cell's connections: all made with this as receiver.
    Signal.disconnectReceiver(this);
    this._clear();
  }

  private _clear(): void {
    for (const badge of this._badges.values()) {
      badge.dispose();
    }
    this._badges.clear();
  }

  /** Index the records again when the kernel's records changed (not on every power sample). */
  private _update(): void {
    const model = this._watch.model;
    if (model.cellsVersion === this._seen) {
      return;
    }
    this._seen = model.cellsVersion;
    this._runs = indexRuns(model.cells);
    this._render();
  }

  private _onCellState(_: ICellModel, change: { name: string }): void {
    // Cleared at the start of a run and on Clear Outputs, set when the kernel replies.
    if (change.name === 'executionCount') {
      this._render();
    }
  }

  private _onCellDisposed(cell: Widget): void {
    this._badges.delete(cell as Cell);
  }

  /** Put on each cell the badge of the run it shows, and take the others away. */
  private _render(): void {
    if (this._isDisposed) {
      return;
    }
    if (!this._enabled) {
      this._clear();
      return;
    }
    for (const cell of this._watch.panel.content.widgets) {
      if (cell.isDisposed || cell.model.type !== 'code') {
        continue;
      }
      const model = cell.model as ICodeCellModel;
      model.stateChanged.connect(this._onCellState, this); // no-op once connected
      const record = shownRun(this._runs, model.id, model.executionCount);
      let badge = this._badges.get(cell);
      if (!record) {
        badge?.dispose();
        this._badges.delete(cell);
        continue;
      }
      const inputArea = cell.inputArea;
      if (!inputArea) {
        if (!this._awaited.has(cell)) {
          this._awaited.add(cell);
          void cell.ready.then(() => this._render());
        }
        continue;
      }
      if (!badge || badge.isDisposed) {
        badge = this._attach(cell, inputArea);
      }
      const { text, title } = badgeText(record, this._unit);
      badge.node.textContent = text;
      badge.node.title = title;
      badge.node.dataset.cellId = model.id;
      badge.node.dataset.executionCount = String(record.executionCount);
    }
  }

  /** A badge on its own line under the input (where the cell toolbar, at the top right, never covers it). */
  private _attach(cell: Cell, inputArea: Widget): Widget {
    const badge = new Widget();
    badge.addClass('gj-cell-badge');
    const layout = cell.layout as PanelLayout;
    const below = inputArea.parent ? layout.widgets.indexOf(inputArea.parent) + 1 : 0;
    if (below > 0) {
      layout.insertWidget(below, badge);
    } else {
      (inputArea.layout as PanelLayout).addWidget(badge);
    }
    this._badges.set(cell, badge);
    cell.disposed.connect(this._onCellDisposed, this);
    return badge;
  }
}
