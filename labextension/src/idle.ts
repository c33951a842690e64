/**
 * The sidebar's "Between cells" figure: the energy drawn while no cell ran and its share of the
 * session (cells and between cells together), as `%carbon` counts it. Pure, so unit-tested.
 */
import { EnergyUnit, formatDuration, formatEnergy, significant } from './format';
import { ITotals } from './model';

/** Return e.g. `{ text: '1.9 J (74%)', title: 'Drawn while no cell ran, …' }`; null when the kernel did not say. */
export function betweenCells(totals: ITotals, unit: EnergyUnit = 'auto'): { text: string; title: string } | null {
  const { idleJ, idleS, energyJ } = totals;
  if (idleJ === null || idleS === null) {
    return null;
  }
  const whole = energyJ + idleJ;
  const share = whole > 0 ? significant((idleJ / whole) * 100) : null;
  let title = `Drawn while no cell ran: ${formatDuration(idleS)} in all`;
  if (share !== null) {
    title += `, ${share}% of the session's ${formatEnergy(whole, unit)} (cells and between cells)`;
  }
  return { text: formatEnergy(idleJ, unit) + (share === null ? '' : ` (${share}%)`), title };
}
