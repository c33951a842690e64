/**
 * greenjupyter for JupyterLab: a sidebar that follows the active notebook's kernel, and an energy
 * badge under each measured cell. Data come from the kernel's stream (`%load_ext greenjupyter`).
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { CellBadges } from './badges';
import { EnergyUnit } from './format';
import { GreenPanel, IPanelSettings } from './panel';
import { KernelWatch, NotebookFollower } from './tracker';

const PLUGIN_ID = 'greenjupyter:plugin';

/** Settings as in labextension/schema/plugin.json. */
interface ISettings extends IPanelSettings {
  showCellBadges: boolean;
}

const DEFAULTS: ISettings = { energyUnit: 'auto', chartWindowMinutes: 10, showCellBadges: true };

function readSettings(settings: ISettingRegistry.ISettings | null): ISettings {
  if (!settings) {
    return DEFAULTS;
  }
  const get = <T>(key: keyof ISettings): T => settings.get(key).composite as T;
  return {
    energyUnit: get<EnergyUnit>('energyUnit') ?? DEFAULTS.energyUnit,
    chartWindowMinutes: get<number>('chartWindowMinutes') ?? DEFAULTS.chartWindowMinutes,
    showCellBadges: get<boolean>('showCellBadges') ?? DEFAULTS.showCellBadges
  };
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Live energy and CO2e of the active notebook kernel, and per-cell energy badges.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ISettingRegistry, ILayoutRestorer],
  activate: async (
    app: JupyterFrontEnd,
    notebooks: INotebookTracker,
    registry: ISettingRegistry | null,
    restorer: ILayoutRestorer | null
  ): Promise<void> => {
    const follower = new NotebookFollower(notebooks);
    const panel = new GreenPanel(follower);
    app.shell.add(panel, 'right', { rank: 900 });
    // Remembered in the workspace: open after a reload if it was open before.
    restorer?.add(panel, panel.id);

    let current = DEFAULTS;
    const badges = new Map<KernelWatch, CellBadges>();
    const badgesFor = (watch: KernelWatch): void => {
      const decorator = new CellBadges(watch);
      decorator.configure(current.showCellBadges, current.energyUnit);
      badges.set(watch, decorator);
      watch.panel.disposed.connect(() => {
        decorator.dispose();
        badges.delete(watch);
      });
    };
    for (const watch of follower.watches) {
      badgesFor(watch);
    }
    follower.watchAdded.connect((_, watch) => badgesFor(watch));

    const apply = (settings: ISettings): void => {
      current = settings;
      panel.applySettings(settings);
      for (const decorator of badges.values()) {
        decorator.configure(settings.showCellBadges, settings.energyUnit);
      }
    };
    if (registry) {
      try {
        const settings = await registry.load(PLUGIN_ID);
        apply(readSettings(settings));
        settings.changed.connect(() => apply(readSettings(settings)));
      } catch (error) {
        console.warn('greenjupyter: could not load settings; using defaults', error);
      }
    }
  }
};

export default plugin;
