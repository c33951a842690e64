/**
 * Everyday equivalents of an amount of CO2e, the same choice as the kernel's
 * `greenjupyter/carbon/equivalents.py`. The factors mirror `greenjupyter/carbon/data/equivalents.csv`
 * (a unit test checks that they match), so the panel needs no request to show them.
 */

export type UnitSystem = 'metric' | 'imperial';

interface IFactor {
  readonly key: string;
  readonly gramsPerUnit: number;
  readonly unit: string;
  readonly one: string;
  readonly system: 'any' | UnitSystem;
}

/** Sources and years: see equivalents.csv (US EPA 2022, Green Algorithms v3 2021). */
export const FACTORS: readonly IFactor[] = [
  { key: 'smartphone_charge', gramsPerUnit: 12.4, unit: 'smartphone charges', one: 'a smartphone charge', system: 'any' },
  { key: 'km_driven', gramsPerUnit: 175, unit: 'km driven by car', one: 'a km driven by car', system: 'metric' },
  { key: 'mile_driven', gramsPerUnit: 393, unit: 'miles driven by car', one: 'a mile driven by car', system: 'imperial' },
  { key: 'video_hour', gramsPerUnit: 36, unit: 'hours of video streaming', one: 'an hour of video streaming', system: 'any' },
  { key: 'tree_month', gramsPerUnit: 917, unit: 'tree-months of CO2 uptake', one: 'a tree-month of CO2 uptake', system: 'any' },
  { key: 'flight_paris_london', gramsPerUnit: 50000, unit: 'Paris-London flights', one: 'a Paris-London flight', system: 'any' }
];

const IMPERIAL = new Set(['US', 'GB', 'LR', 'MM']);
const MIN_SHARE = 1e-4;
const PREFERENCE: ReadonlyArray<[number, readonly string[]]> = [
  [1, ['smartphone_charge', 'video_hour', 'km_driven', 'mile_driven']],
  [1000, ['smartphone_charge', 'km_driven', 'mile_driven', 'video_hour']],
  [20000, ['km_driven', 'mile_driven', 'tree_month', 'smartphone_charge']],
  [Infinity, ['km_driven', 'mile_driven', 'flight_paris_london', 'tree_month']]
];

/** Return 'imperial' for grids in countries that drive in miles, else 'metric'. */
export function unitsForRegion(region: string | null | undefined): UnitSystem {
  const country = (region ?? '').split('-')[0].toUpperCase();
  return IMPERIAL.has(country) ? 'imperial' : 'metric';
}

/** Round as the kernel does: whole numbers with separators from 100, else two significant digits. */
export function roundCount(x: number): string {
  if (x >= 100) {
    return Math.round(x).toLocaleString('en-US');
  }
  return String(Number(x.toPrecision(x >= 0.01 ? 2 : 1)));
}

function phrase(factor: IFactor, count: number): string {
  let unit = factor.unit;
  if (factor.key === 'km_driven' && count < 1) {
    count *= 1000;
    unit = 'm driven by car';
  } else if (factor.key === 'mile_driven' && count < 1) {
    count *= 5280;
    unit = 'feet driven by car';
  } else if (count < 0.1) {
    return `≈ ${roundCount(count * 100)}% of ${factor.one}`;
  }
  const shown = roundCount(count);
  return shown === '1' ? `≈ ${factor.one}` : `≈ ${shown} ${unit}`;
}

/** Return up to `howMany` phrases such as "≈ 3.2% of a smartphone charge", the most natural first. */
export function equivalents(co2eG: number, units: UnitSystem = 'metric', howMany = 2): string[] {
  if (!Number.isFinite(co2eG) || co2eG <= 0) {
    return [];
  }
  const order = PREFERENCE.find(([limit]) => co2eG < limit)![1];
  const found: string[] = [];
  for (const key of order) {
    const factor = FACTORS.find(f => f.key === key && (f.system === 'any' || f.system === units));
    if (!factor) {
      continue;
    }
    const count = co2eG / factor.gramsPerUnit;
    if (count >= MIN_SHARE) {
      found.push(phrase(factor, count));
    }
  }
  return found.slice(0, howMany);
}
