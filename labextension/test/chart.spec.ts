import { chartWindow, niceCeiling } from '../src/chart';
import { StreamModel, VERSION } from '../src/model';

const T0 = 1.7e9;

function modelWith(samplesFrom: number, samplesTo: number, cellStarts: number[] = []): StreamModel {
  const model = new StreamModel({ log: () => undefined });
  const samples = [];
  for (let t = samplesFrom; t <= samplesTo; t += 0.25) {
    samples.push([t - 0.25, t, 5, [5]]);
  }
  const cells = cellStarts.map((startedAt, i) => ({
    execution_count: i + 1, started_at: startedAt, duration_s: 1, energy_j: 1
  }));
  model.apply({ v: VERSION, kind: 'snapshot', seq: 1, session: 's', t: samplesTo, components: ['cpu:process'],
    estimated: [], samples, cells, totals: { cells: cells.length, duration_s: 1, energy_j: 1, co2e_g: null } });
  return model;
}

describe('chartWindow', () => {
  it('shows a minute before any sample', () => {
    expect(chartWindow(new StreamModel(), 600)).toBe(60);
    expect(chartWindow(new StreamModel(), 30)).toBe(30);
  });

  it('grows with the session in whole minutes', () => {
    expect(chartWindow(modelWith(T0, T0 + 10), 600)).toBe(60);
    expect(chartWindow(modelWith(T0, T0 + 90), 600)).toBe(120);
    expect(chartWindow(modelWith(T0, T0 + 179.5), 600)).toBe(180);
  });

  it('counts from the oldest cell when the samples are only the last minute (a reloaded page)', () => {
    expect(chartWindow(modelWith(T0 + 240, T0 + 300, [T0 + 10, T0 + 250]), 600)).toBe(300);
  });

  it('stops at the setting', () => {
    expect(chartWindow(modelWith(T0, T0 + 3000), 600)).toBe(600);
  });
});

describe('niceCeiling', () => {
  it('rounds up to 1, 2, 2.5 or 5 times a power of ten', () => {
    expect(niceCeiling(0.37)).toBe(0.5);
    expect(niceCeiling(1.9)).toBe(2);
    expect(niceCeiling(2.2)).toBe(2.5);
    expect(niceCeiling(26)).toBe(50);
    expect(niceCeiling(100)).toBe(100);
    expect(niceCeiling(0)).toBe(1);
  });
});
