/**
 * Pure formatting of power, energy, CO2e and durations: SI units, three significant digits.
 * No DOM here, so everything is unit-tested.
 */
import type { ICellRecord } from './model';

/** How energy is shown: `auto` picks J for small amounts and Wh/kWh from 1 Wh up. */
export type EnergyUnit = 'auto' | 'J' | 'Wh';

/** Return `value` with three significant digits, no exponent, e.g. 1.23, 12.3, 123, 1230. */
export function significant(value: number, digits = 3): string {
  if (!Number.isFinite(value)) {
    return '–';
  }
  if (value === 0) {
    return '0';
  }
  const magnitude = Math.floor(Math.log10(Math.abs(value)));
  const decimals = Math.max(0, digits - 1 - magnitude);
  let text = value.toFixed(decimals);
  // 9.996 rounds to "10.00": drop the digit that is now too many
  const again = Math.floor(Math.log10(Math.abs(Number(text)) || 1));
  if (again > magnitude && decimals > 0) {
    text = value.toFixed(decimals - 1);
  }
  return text;
}

interface IScale {
  readonly factor: number;
  readonly unit: string;
}

function scaled(value: number, scales: readonly IScale[]): string {
  if (!Number.isFinite(value)) {
    return '–';
  }
  const size = Math.abs(value);
  let chosen = scales[0];
  for (const scale of scales) {
    if (size >= scale.factor * 0.9995) {
      chosen = scale;
    }
  }
  if (value === 0) {
    chosen = scales.find(s => s.factor === 1) ?? scales[0];
  }
  return `${significant(value / chosen.factor)} ${chosen.unit}`;
}

const WATTS: readonly IScale[] = [
  { factor: 1e-3, unit: 'mW' },
  { factor: 1, unit: 'W' },
  { factor: 1e3, unit: 'kW' },
  { factor: 1e6, unit: 'MW' }
];

const JOULES: readonly IScale[] = [
  { factor: 1e-6, unit: 'µJ' },
  { factor: 1e-3, unit: 'mJ' },
  { factor: 1, unit: 'J' },
  { factor: 1e3, unit: 'kJ' },
  { factor: 1e6, unit: 'MJ' }
];

const WATT_HOURS: readonly IScale[] = [
  { factor: 3.6, unit: 'mWh' },
  { factor: 3.6e3, unit: 'Wh' },
  { factor: 3.6e6, unit: 'kWh' },
  { factor: 3.6e9, unit: 'MWh' }
];

const GRAMS: readonly IScale[] = [
  { factor: 1e-6, unit: 'µg' },
  { factor: 1e-3, unit: 'mg' },
  { factor: 1, unit: 'g' },
  { factor: 1e3, unit: 'kg' },
  { factor: 1e6, unit: 't' }
];

/** Return e.g. "850 mW", "12.3 W", "1.20 kW". */
export function formatPower(watts: number | null | undefined): string {
  if (watts === null || watts === undefined) {
    return '–';
  }
  return scaled(watts, WATTS);
}

/**
 * Return energy in joules as text: with `auto`, joules below one watt-hour (3.6 kJ), then
 * Wh and kWh; `J` and `Wh` force a family (still with its prefixes).
 */
export function formatEnergy(joules: number | null | undefined, unit: EnergyUnit = 'auto'): string {
  if (joules === null || joules === undefined) {
    return '–';
  }
  if (unit === 'J' || (unit === 'auto' && Math.abs(joules) < 3600 * 0.9995)) {
    return scaled(joules, JOULES);
  }
  return scaled(joules, WATT_HOURS);
}

/** Return grams of CO2e, e.g. "8.29 µg CO2e", "1.20 kg CO2e". */
export function formatCO2e(grams: number | null | undefined): string {
  if (grams === null || grams === undefined || !Number.isFinite(grams)) {
    return '–';
  }
  return `${scaled(grams, GRAMS)} CO2e`;
}

/** Return a duration, e.g. "350 ms", "2.05 s", "1 min 05 s", "1 h 02 min". */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) {
    return '–';
  }
  if (seconds === 0) {
    return '0 s';
  }
  if (seconds < 1e-3) {
    return `${significant(seconds * 1e6)} µs`;
  }
  if (seconds < 0.9995) {
    return `${significant(seconds * 1e3)} ms`;
  }
  if (seconds < 59.95) {
    return `${significant(seconds)} s`;
  }
  const whole = Math.round(seconds);
  if (whole < 3600) {
    const minutes = Math.floor(whole / 60);
    return `${minutes} min ${String(whole % 60).padStart(2, '0')} s`;
  }
  const hours = Math.floor(whole / 3600);
  return `${hours} h ${String(Math.floor((whole % 3600) / 60)).padStart(2, '0')} min`;
}

/** Return a grid intensity, e.g. "44.2 g/kWh". */
export function formatIntensity(gPerKwh: number | null | undefined): string {
  if (gPerKwh === null || gPerKwh === undefined || !Number.isFinite(gPerKwh)) {
    return '–';
  }
  return `${significant(gPerKwh)} g/kWh`;
}

/** Return an age relative to now for a chart axis, e.g. "-5 min", "-30 s", "now". */
export function formatAgo(seconds: number): string {
  if (seconds < 0.5) {
    return 'now';
  }
  if (seconds < 60) {
    return `-${Math.round(seconds)} s`;
  }
  return `-${significant(seconds / 60, 2)} min`;
}

/** Return the first non-empty line of a cell's source preview, shortened to `max` characters. */
export function firstLine(source: string | null | undefined, max = 60): string {
  if (!source) {
    return '';
  }
  const line = source.split('\n').find(l => l.trim() !== '') ?? '';
  const trimmed = line.trim();
  return trimmed.length > max ? `${trimmed.slice(0, max - 1)}…` : trimmed;
}

/** Return the badge's text and tooltip for a cell record (pure, tested). */
export function badgeText(record: ICellRecord, unit: EnergyUnit = 'auto'): { text: string; title: string } {
  const parts = [`⚡ ${formatEnergy(record.energyJ, unit)}`];
  if (record.co2eG !== null) {
    parts.push(formatCO2e(record.co2eG));
  }
  parts.push(formatDuration(record.durationS));
  const title =
    `${record.estimated ? 'Estimated' : 'Measured'} by greenjupyter` +
    (record.avgPowerW !== null ? `: average ${formatPower(record.avgPowerW)}` : '') +
    (record.peakPowerW !== null ? `, peak ${formatPower(record.peakPowerW)}` : '') +
    (record.executionCount !== null ? ` (run [${record.executionCount}])` : '');
  return { text: parts.join(' · ') + (record.estimated ? ' · estimated' : ''), title };
}
