import {
  badgeText,
  firstLine,
  formatAgo,
  formatCO2e,
  formatDuration,
  formatEnergy,
  formatIntensity,
  formatPower,
  significant
} from '../src/format';
import { parseCell } from '../src/model';

describe('significant', () => {
  it('keeps three significant digits without exponents', () => {
    expect(significant(1.23456)).toBe('1.23');
    expect(significant(12.3456)).toBe('12.3');
    expect(significant(123.456)).toBe('123');
    expect(significant(1234.5)).toBe('1235');
    expect(significant(0.0012345)).toBe('0.00123');
    expect(significant(0)).toBe('0');
    expect(significant(NaN)).toBe('–');
  });
  it('does not grow a digit when rounding up to the next power of ten', () => {
    expect(significant(9.996)).toBe('10.0');
    expect(significant(99.97)).toBe('100');
  });
});

describe('formatPower', () => {
  it('picks mW, W, kW', () => {
    expect(formatPower(0.85)).toBe('850 mW');
    expect(formatPower(12.34)).toBe('12.3 W');
    expect(formatPower(1200)).toBe('1.20 kW');
    expect(formatPower(0)).toBe('0 W');
    expect(formatPower(null)).toBe('–');
  });
  it('moves to the next prefix where rounding would show 1000', () => {
    expect(formatPower(999.9)).toBe('1.00 kW');
  });
});

describe('formatEnergy', () => {
  it('auto: joules below a watt-hour, then Wh and kWh', () => {
    expect(formatEnergy(0.000676)).toBe('676 µJ');
    expect(formatEnergy(0.676)).toBe('676 mJ');
    expect(formatEnergy(12.5)).toBe('12.5 J');
    expect(formatEnergy(3599)).toBe('1.00 Wh');
    expect(formatEnergy(3600)).toBe('1.00 Wh');
    expect(formatEnergy(7200)).toBe('2.00 Wh');
    expect(formatEnergy(3.6e6 * 2.5)).toBe('2.50 kWh');
  });
  it('J or Wh on request', () => {
    expect(formatEnergy(7200, 'J')).toBe('7.20 kJ');
    expect(formatEnergy(36, 'Wh')).toBe('10.0 mWh');
    expect(formatEnergy(undefined)).toBe('–');
  });
});

describe('formatCO2e, formatIntensity', () => {
  it('µg to tonnes', () => {
    expect(formatCO2e(8.29e-6)).toBe('8.29 µg CO2e');
    expect(formatCO2e(0.0012)).toBe('1.20 mg CO2e');
    expect(formatCO2e(5)).toBe('5.00 g CO2e');
    expect(formatCO2e(1200)).toBe('1.20 kg CO2e');
    expect(formatCO2e(2.5e6)).toBe('2.50 t CO2e');
    expect(formatCO2e(null)).toBe('–');
  });
  it('intensity', () => {
    expect(formatIntensity(44.18)).toBe('44.2 g/kWh');
    expect(formatIntensity(undefined)).toBe('–');
  });
});

describe('formatDuration', () => {
  it('from microseconds to hours', () => {
    expect(formatDuration(0.0000123)).toBe('12.3 µs');
    expect(formatDuration(0.374)).toBe('374 ms');
    expect(formatDuration(2.0531)).toBe('2.05 s');
    expect(formatDuration(59.99)).toBe('1 min 00 s');
    expect(formatDuration(65)).toBe('1 min 05 s');
    expect(formatDuration(3725)).toBe('1 h 02 min');
    expect(formatDuration(-1)).toBe('–');
  });
  it('ages for the chart axis', () => {
    expect(formatAgo(0)).toBe('now');
    expect(formatAgo(30)).toBe('-30 s');
    expect(formatAgo(600)).toBe('-10 min');
  });
});

describe('firstLine', () => {
  it('takes the first non-empty line and shortens it', () => {
    expect(firstLine('\n\n  import time\ntime.sleep(2)')).toBe('import time');
    expect(firstLine('x'.repeat(100), 10)).toBe('xxxxxxxxx…');
    expect(firstLine(null)).toBe('');
  });
  it('leaves markup as it is: the view puts it in as text', () => {
    expect(firstLine('<img src=x onerror=alert(1)>')).toBe('<img src=x onerror=alert(1)>');
  });
});

describe('badgeText', () => {
  it('says energy, CO2e, duration and whether it was estimated', () => {
    const cell = parseCell({
      execution_count: 3,
      cell_id: 'abc',
      source_preview: 'x',
      success: true,
      started_at: 1000,
      duration_s: 2.01,
      energy_j: 7.7,
      components: { 'cpu:process': 7.6 },
      estimated: true,
      avg_power_w: 3.83,
      peak_power_w: 3.9,
      co2e_g: 0.00094
    })!;
    const { text, title } = badgeText(cell);
    expect(text).toBe('⚡ 7.70 J · 940 µg CO2e · 2.01 s · estimated');
    expect(title).toBe('Estimated by greenjupyter: average 3.83 W, peak 3.90 W (run [3])');
  });
});
