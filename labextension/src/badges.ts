/**
 * A small energy badge under each measured cell, like jupyterlab-execute-time's timing line.
 * One `CellBadges` per notebook; every signal connection it makes is undone in `dispose`.
 */
import { Cell } from '@jupyterlab/cells';
import { IDisposable } from '@lumino/disposable';
import { PanelLayout, Widget } from '@lumino/widgets';

import { badgeText, EnergyUnit } from './format';
import { ICellRecord } from './model';
import { KernelWatch } from './tracker';

export class CellBadges implements IDisposable {
  private _badges = new Map<Cell, Widget>();
  private _seen = -1;
  private _enabled = true;
  private _unit: EnergyUnit = 'auto';
  private _isDisposed = false;

  constructor(private readonly _watch: KernelWatch) {
    _watch.changed.connect(this._update, this);
    _watch.panel.content.model?.cells.changed.connect(this._refresh, this);
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  configure(enabled: boolean, unit: EnergyUnit): void {
    this._enabled = enabled;
    this._unit = unit;
    this._refresh();
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._watch.changed.disconnect(this._update, this);
    this._watch.panel.content.model?.cells.changed.disconnect(this._refresh, this);
    this._clear();
  }

  private _refresh(): void {
    this._seen = -1;
    this._update();
  }

  private _clear(): void {
    for (const badge of this._badges.values()) {
      badge.dispose();
    }
    this._badges.clear();
  }

  private _update(): void {
    if (this._isDisposed) {
      return;
    }
    if (!this._enabled) {
      this._clear();
      return;
    }
    const model = this._watch.model;
    if (model.cellsVersion === this._seen) {
      return;
    }
    this._seen = model.cellsVersion;
    // The newest record per cell: records are oldest first, so later ones win.
    const newest = new Map<string, ICellRecord>();
    for (const record of model.cells) {
      if (record.cellId) {
        newest.set(record.cellId, record);
      }
    }
    if (!newest.size) {
      return;
    }
    for (const cell of this._watch.panel.content.widgets) {
      const record = newest.get(cell.model.id);
      if (!record || cell.isDisposed || !cell.inputArea) {
        continue;
      }
      let badge = this._badges.get(cell);
      if (!badge || badge.isDisposed) {
        badge = new Widget();
        badge.addClass('gj-cell-badge');
        // On its own line under the input (where the cell toolbar, at the top right, never covers it).
        const layout = cell.layout as PanelLayout;
        const below = cell.inputArea.parent ? layout.widgets.indexOf(cell.inputArea.parent) + 1 : 0;
        if (below > 0) {
          layout.insertWidget(below, badge);
        } else {
          (cell.inputArea.layout as PanelLayout).addWidget(badge);
        }
        this._badges.set(cell, badge);
        cell.disposed.connect(() => this._badges.delete(cell));
      }
      const { text, title } = badgeText(record, this._unit);
      badge.node.textContent = text;
      badge.node.title = title;
    }
  }
}
