import * as fs from 'fs';
import * as path from 'path';

import { equivalents, FACTORS, roundCount, unitsForRegion } from '../src/equivalents';

describe('equivalents', () => {
  it('mirror the kernel data file', () => {
    const csv = fs.readFileSync(path.join(__dirname, '../../greenjupyter/carbon/data/equivalents.csv'), 'utf8');
    const rows = csv
      .split('\n')
      .filter(line => line && !line.startsWith('#'))
      .slice(1)
      .map(line => line.split(','));
    expect(rows.map(r => [r[0], Number(r[1]), r[2], r[3], r[4]])).toEqual(
      FACTORS.map(f => [f.key, f.gramsPerUnit, f.unit, f.one, f.system])
    );
  });

  it('read like the kernel (greenjupyter.carbon.equivalents)', () => {
    expect(equivalents(0.0005)).toEqual([]);
    expect(equivalents(0.5)).toEqual(['≈ 4% of a smartphone charge', '≈ 1.4% of an hour of video streaming']);
    expect(equivalents(5)).toEqual(['≈ 0.4 smartphone charges', '≈ 29 m driven by car']);
    expect(equivalents(5, 'imperial')).toEqual(['≈ 0.4 smartphone charges', '≈ 67 feet driven by car']);
    expect(equivalents(300, 'imperial')).toEqual(['≈ 24 smartphone charges', '≈ 4,031 feet driven by car']);
    expect(equivalents(5000)).toEqual(['≈ 29 km driven by car', '≈ 5.5 tree-months of CO2 uptake']);
    expect(equivalents(100000, 'imperial')).toEqual(['≈ 254 miles driven by car', '≈ 2 Paris-London flights']);
    expect(roundCount(1.04)).toBe('1');
  });

  it('use miles where the grid drives in miles', () => {
    expect(unitsForRegion('US-CA')).toBe('imperial');
    expect(unitsForRegion('GB')).toBe('imperial');
    expect(unitsForRegion('FR')).toBe('metric');
    expect(unitsForRegion(undefined)).toBe('metric');
  });
});
