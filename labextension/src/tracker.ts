/**
 * Follows notebooks and their kernels. One `KernelWatch` per open notebook listens to its session's
 * IOPub messages, keeps the greenjupyter ones in a `StreamModel` and knows what state the kernel is
 * in (no kernel, not Python, restarted, busy). `NotebookFollower` says which watch is active.
 */
import { ISessionContext } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { MIME_PATTERN, StreamModel } from './model';

/** Why there is nothing live to show, or `live`; each is said to the user in words by the panel. */
export type WatchState =
  | { kind: 'no-notebook' }
  | { kind: 'no-kernel' }
  | { kind: 'not-python'; language: string }
  | { kind: 'restarted' }
  | { kind: 'busy-waiting' }
  | { kind: 'not-loaded' }
  | { kind: 'live' };

/**
 * Ask a kernel that already streams for a snapshot on its next sampler tick, so a reloaded page
 * catches up at once instead of at the next periodic snapshot. Silent (no history, no cell hooks,
 * no output), defines no names, and does nothing where greenjupyter is not loaded.
 */
export const SNAPSHOT_REQUEST =
  "(lambda m: m and (lambda r: r and r.stream and r.stream.request_snapshot())(m.current_recorder()))" +
  "(__import__('sys').modules.get('greenjupyter.ipython.extension'))";

export class KernelWatch implements IDisposable {
  readonly panel: NotebookPanel;
  readonly model: StreamModel;
  private _changed = new Signal<this, void>(this);
  private _restarted = false;
  private _language: string | null = null;
  private _kernelId: string | null = null;
  private _isDisposed = false;
  private _snapshotAsked = false;
  /** A cell is executing: from the kernel's busy/idle for execute requests only (the debugger's and
   * other control traffic flip the kernel's status in between). */
  private _executing = false;

  constructor(panel: NotebookPanel, model = new StreamModel()) {
    this.panel = panel;
    this.model = model;
    const context = panel.sessionContext;
    context.iopubMessage.connect(this._onIopub, this);
    context.kernelChanged.connect(this._onKernelChanged, this);
    context.statusChanged.connect(this._onStatus, this);
    this._onKernelChanged();
  }

  /** Emitted after every applied message or kernel state change. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  get state(): WatchState {
    const context: ISessionContext = this.panel.sessionContext;
    const kernel = context.session?.kernel;
    if (!kernel || context.hasNoKernel) {
      return { kind: 'no-kernel' };
    }
    if (this._language !== null && this._language !== 'python') {
      return { kind: 'not-python', language: this._language };
    }
    if (this.model.hasData) {
      return { kind: 'live' };
    }
    if (this._restarted) {
      return { kind: 'restarted' };
    }
    return this._executing ? { kind: 'busy-waiting' } : { kind: 'not-loaded' };
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    Signal.clearData(this);
  }

  private _onIopub(_: ISessionContext, msg: KernelMessage.IMessage): void {
    const type = msg.header.msg_type;
    if (type === 'status') {
      if ((msg.parent_header as Partial<KernelMessage.IHeader>).msg_type === 'execute_request') {
        this._executing = (msg.content as KernelMessage.IStatusMsg['content']).execution_state === 'busy';
        this._changed.emit();
      }
      return;
    }
    if (type !== 'update_display_data' && type !== 'display_data') {
      return;
    }
    const data = (msg.content as KernelMessage.IDisplayDataMsg['content']).data;
    if (!data) {
      return;
    }
    for (const mime of Object.keys(data)) {
      if (MIME_PATTERN.test(mime)) {
        if (this.model.apply(data[mime]) === 'applied') {
          this._restarted = false;
          this._changed.emit();
        }
      }
    }
  }

  private _onKernelChanged(): void {
    const kernel = this.panel.sessionContext.session?.kernel ?? null;
    const id = kernel?.id ?? null;
    if (id !== this._kernelId) {
      this._kernelId = id;
      this.model.reset();
      this._language = null;
      this._snapshotAsked = false;
      this._executing = false;
    }
    if (kernel) {
      this._readLanguage(kernel);
    }
    this._changed.emit();
  }

  private _onStatus(_: ISessionContext, status: Kernel.Status): void {
    if (status === 'restarting' || status === 'autorestarting') {
      this.model.reset();
      this._restarted = true;
      this._executing = false;
      this._snapshotAsked = false;
    }
    if (status === 'idle') {
      this._askSnapshot();
    }
    this._changed.emit();
  }

  private _readLanguage(kernel: Kernel.IKernelConnection): void {
    kernel.info
      .then(info => {
        if (this._isDisposed || this.panel.sessionContext.session?.kernel !== kernel) {
          return;
        }
        this._language = (info.language_info?.name ?? '').toLowerCase();
        this._askSnapshot();
        this._changed.emit();
      })
      .catch(() => undefined);
  }

  /** Once per kernel, when it is idle and Python and nothing has arrived yet: ask for a snapshot. */
  private _askSnapshot(): void {
    const kernel = this.panel.sessionContext.session?.kernel;
    if (this._snapshotAsked || this.model.hasSnapshot || !kernel || this._language !== 'python' || kernel.status !== 'idle') {
      return;
    }
    this._snapshotAsked = true;
    kernel.requestExecute({ code: SNAPSHOT_REQUEST, silent: true, store_history: false }, true);
  }
}

/** Keeps one `KernelWatch` per open notebook and says which one belongs to the active notebook. */
export class NotebookFollower implements IDisposable {
  private _watches = new Map<NotebookPanel, KernelWatch>();
  private _activeChanged = new Signal<this, KernelWatch | null>(this);
  private _watchAdded = new Signal<this, KernelWatch>(this);
  private _isDisposed = false;

  constructor(readonly notebooks: INotebookTracker) {
    notebooks.widgetAdded.connect((_, panel) => this._watch(panel), this);
    notebooks.currentChanged.connect(() => this._activeChanged.emit(this.active), this);
    notebooks.forEach(panel => this._watch(panel));
  }

  get active(): KernelWatch | null {
    const panel = this.notebooks.currentWidget;
    return panel ? this._watch(panel) : null;
  }

  get activeChanged(): ISignal<this, KernelWatch | null> {
    return this._activeChanged;
  }

  get watchAdded(): ISignal<this, KernelWatch> {
    return this._watchAdded;
  }

  get watches(): IterableIterator<KernelWatch> {
    return this._watches.values();
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    for (const watch of this._watches.values()) {
      watch.dispose();
    }
    this._watches.clear();
    Signal.clearData(this);
  }

  private _watch(panel: NotebookPanel): KernelWatch {
    let watch = this._watches.get(panel);
    if (!watch) {
      watch = new KernelWatch(panel);
      this._watches.set(panel, watch);
      panel.disposed.connect(() => {
        this._watches.get(panel)?.dispose();
        this._watches.delete(panel);
      }, this);
      this._watchAdded.emit(watch);
    }
    return watch;
  }
}
