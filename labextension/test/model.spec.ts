import { StreamModel, VERSION } from '../src/model';

const SESSION = 'a'.repeat(32);

function cell(count: number, startedAt: number, energy: number, extra: Record<string, unknown> = {}) {
  return {
    execution_count: count,
    cell_id: `id-${count}`,
    source_preview: `cell ${count}`,
    success: true,
    error: null,
    started_at: startedAt,
    duration_s: 1,
    energy_j: energy,
    components: { 'cpu:process': energy * 0.9, 'dram:process': energy * 0.1 },
    estimated: true,
    avg_power_w: energy,
    peak_power_w: energy,
    co2e_g: energy * 1e-4,
    ...extra
  };
}

function sample(t: number, w = 5): unknown[] {
  return [t - 0.25, t, w, [w * 0.9, w * 0.1]];
}

function snapshot(seq: number, extra: Record<string, unknown> = {}) {
  return {
    v: VERSION,
    kind: 'snapshot',
    seq,
    session: SESSION,
    t: 1000,
    busy: false,
    components: ['cpu:process', 'dram:process'],
    estimated: ['cpu:process', 'dram:process'],
    samples: [sample(999.5), sample(999.75), sample(1000)],
    cells: [cell(1, 990, 2)],
    totals: {
      cells: 1,
      duration_s: 1,
      energy_j: 2,
      co2e_g: 2e-4,
      components: {},
      equivalents: [{ key: 'smartphone_charge', text: '≈ 0.002% of a smartphone charge' }],
      idle_j: 6,
      idle_s: 30
    },
    grid: { region: 'FR', name: 'France', g_per_kwh: 44.18, pue: 1, source: 'Ember 2024', origin: 'setting' },
    ...extra
  };
}

function update(seq: number, extra: Record<string, unknown> = {}) {
  return { v: VERSION, kind: 'update', seq, session: SESSION, t: 1001, busy: true, samples: [], cells: [], ...extra };
}

function quietModel(notes: string[] = []) {
  return new StreamModel({ log: message => notes.push(message) });
}

describe('StreamModel', () => {
  it('takes a snapshot whole', () => {
    const model = quietModel();
    expect(model.apply(snapshot(1))).toBe('applied');
    expect(model.session).toBe(SESSION);
    expect(model.components).toEqual(['cpu:process', 'dram:process']);
    expect(model.estimated).toEqual([true, true]);
    expect(model.samples.length).toBe(3);
    expect(model.cells.map(c => c.executionCount)).toEqual([1]);
    expect(model.totals).toEqual({
      cells: 1,
      durationS: 1,
      energyJ: 2,
      co2eG: 2e-4,
      equivalents: [{ key: 'smartphone_charge', text: '≈ 0.002% of a smartphone charge' }],
      idleJ: 6,
      idleS: 30
    });
    expect(model.grid?.gPerKwh).toBe(44.18);
    expect(model.latest()).toEqual({ t1: 1000, totalW: 5, watts: [4.5, 0.5] });
  });

  it('adds updates: new samples, finished cells, and the kernel\'s totals after them', () => {
    const model = quietModel();
    model.apply(snapshot(1));
    model.apply(update(2, { samples: [sample(1000.25, 9), sample(1000.5, 11)] }));
    expect(model.busy).toBe(true);
    expect(model.latest()?.totalW).toBe(11);
    expect(model.totals?.energyJ).toBe(2); // an update without totals leaves them as they were
    const totals = {
      cells: 2,
      duration_s: 2,
      energy_j: 22,
      co2e_g: 22e-4,
      components: {},
      equivalents: [{ key: 'smartphone_charge', text: '≈ 0.02% of a smartphone charge' }]
    };
    model.apply(update(3, { busy: false, cells: [cell(2, 999, 20)], totals }));
    expect(model.cells.map(c => c.executionCount)).toEqual([1, 2]);
    expect(model.totals).toEqual({
      cells: 2,
      durationS: 2,
      energyJ: 22,
      co2eG: 22e-4,
      equivalents: [{ key: 'smartphone_charge', text: '≈ 0.02% of a smartphone charge' }],
      idleJ: null, // a kernel that does not send the time between cells
      idleS: null
    });
  });

  it('takes totals as the kernel states them, never adding cells up itself', () => {
    const model = quietModel();
    model.apply(snapshot(1));
    // Cells the panel never saw (a lost message) are in the kernel's totals all the same.
    model.apply(
      update(3, {
        cells: [cell(3, 1000, 5)],
        totals: { cells: 3, duration_s: 3, energy_j: 30, co2e_g: null, equivalents: [] }
      })
    );
    expect(model.totals).toEqual({
      cells: 3,
      durationS: 3,
      energyJ: 30,
      co2eG: null,
      equivalents: [],
      idleJ: null,
      idleS: null
    });
    // A cell without totals beside it (an older kernel) leaves the totals alone.
    model.apply(update(4, { cells: [cell(4, 1001, 7)] }));
    expect(model.totals?.energyJ).toBe(30);
    expect(model.cells.length).toBe(3);
  });

  it('takes the energy between cells as the kernel states it, and nothing that is not a number', () => {
    const model = quietModel();
    model.apply(snapshot(1));
    const totals = { cells: 1, duration_s: 1, energy_j: 2, co2e_g: null, equivalents: [] };
    model.apply(update(2, { totals: { ...totals, idle_j: 12.5, idle_s: 61 } }));
    expect([model.totals?.idleJ, model.totals?.idleS]).toEqual([12.5, 61]);
    model.apply(update(3, { totals: { ...totals, idle_j: '12.5', idle_s: null } }));
    expect([model.totals?.idleJ, model.totals?.idleS]).toEqual([null, null]);
  });

  it('keeps well-formed equivalents and drops anything else', () => {
    const notes: string[] = [];
    const model = quietModel(notes);
    const withEquivalents = (seq: number, equivalents: unknown) =>
      snapshot(seq, { totals: { cells: 1, duration_s: 1, energy_j: 2, co2e_g: 2e-4, equivalents } });
    model.apply(
      withEquivalents(1, [
        { key: 'km_driven', text: '≈ 29 m driven by car' },
        { key: 'video_hour' },
        { key: 3, text: '≈ 3' },
        { key: 'tree_month', text: { html: '<b>x</b>' } },
        '≈ a string',
        null,
        ['km_driven', 'x'],
        { key: 'smartphone_charge', text: '<img src=x onerror=alert(1)>', extra: 1 }
      ])
    );
    expect(model.totals?.equivalents).toEqual([
      { key: 'km_driven', text: '≈ 29 m driven by car' },
      { key: 'smartphone_charge', text: '<img src=x onerror=alert(1)>' } // kept as text; the view renders text
    ]);
    expect(notes.some(n => /ignored 6 malformed equivalent/.test(n))).toBe(true);
    for (const [seq, malformed] of [[2, 'km'], [3, { key: 'km_driven', text: 'x' }], [4, null], [5, 7]] as const) {
      model.apply(withEquivalents(seq, malformed));
      expect(model.totals?.equivalents).toEqual([]);
      expect(model.totals?.energyJ).toBe(2);
    }
    expect(notes.some(n => /equivalents that are not a list/.test(n))).toBe(true);
    model.apply(withEquivalents(6, undefined)); // none sent: none shown
    expect(model.totals?.equivalents).toEqual([]);
  });

  it('does not count a cell or a sample twice when a snapshot repeats them', () => {
    const model = quietModel();
    model.apply(snapshot(1));
    model.apply(update(2, { samples: [sample(1000.25)], cells: [cell(2, 999, 20)] }));
    model.apply(
      snapshot(3, {
        samples: [sample(999.75), sample(1000), sample(1000.25), sample(1000.5)],
        cells: [cell(1, 990, 2), cell(2, 999, 20)],
        totals: { cells: 2, duration_s: 2, energy_j: 22, co2e_g: 22e-4, equivalents: [] }
      })
    );
    expect(model.cells.length).toBe(2);
    expect(model.samples.t1).toEqual([999.5, 999.75, 1000, 1000.25, 1000.5]);
    expect(model.totals?.energyJ).toBe(22);
  });

  it('starts over on a new session (a kernel restart or a new %load_ext)', () => {
    const model = quietModel();
    model.apply(snapshot(1));
    model.apply(update(1, { session: 'b'.repeat(32), samples: [sample(2000)] }));
    expect(model.session).toBe('b'.repeat(32));
    expect(model.cells).toEqual([]);
    expect(model.totals).toBeNull();
    expect(model.samples.length).toBe(1);
    model.reset();
    expect(model.hasData).toBe(false);
  });

  it('counts lost messages from gaps in seq', () => {
    const model = quietModel();
    model.apply(snapshot(1));
    model.apply(update(4));
    expect(model.lost).toBe(2);
  });

  it('ignores other schema versions with one console note per version', () => {
    const notes: string[] = [];
    const model = quietModel(notes);
    expect(model.apply({ ...snapshot(1), v: 2 })).toBe('ignored');
    expect(model.apply({ ...snapshot(2), v: 2 })).toBe('ignored');
    expect(model.hasData).toBe(false);
    expect(notes.length).toBe(1);
    expect(notes[0]).toMatch(/schema version 2/);
  });

  it('refuses malformed messages and drops malformed parts', () => {
    const notes: string[] = [];
    const model = quietModel(notes);
    expect(model.apply(null)).toBe('invalid');
    expect(model.apply('<img src=x>')).toBe('invalid');
    expect(model.apply({ v: VERSION, kind: 'delete', seq: 1, session: SESSION, t: 1 })).toBe('invalid');
    expect(model.apply({ v: VERSION, kind: 'update', seq: '1', session: SESSION, t: 1 })).toBe('invalid');
    expect(model.apply(update(1, { samples: 'many' }))).toBe('invalid');
    expect(model.hasData).toBe(false);
    model.apply(snapshot(1));
    model.apply(
      update(2, {
        samples: [[1, 0, 5, [1, 1]], [1000.1, 1000.2, 'x', []], sample(1000.3), [1000.3, 1000.4, 5, [1]]],
        cells: [{ execution_count: 5 }, cell(6, 1000, 1)]
      })
    );
    expect(model.samples.length).toBe(4);
    expect(model.cells.map(c => c.executionCount)).toEqual([1, 6]);
    expect(notes.some(n => /malformed power sample/.test(n))).toBe(true);
    expect(notes.some(n => /malformed cell record/.test(n))).toBe(true);
  });

  it('keeps the kernel\'s strings as they are (the view renders them as text)', () => {
    const model = quietModel();
    model.apply(snapshot(1, { cells: [cell(1, 990, 2, { source_preview: '<img src=x onerror=alert(1)>' })] }));
    expect(model.cells[0].sourcePreview).toBe('<img src=x onerror=alert(1)>');
  });

  it('marks components that joined after the last snapshot as unknown until the next one', () => {
    const model = quietModel();
    model.apply(snapshot(1));
    model.apply(update(2, { components: ['cpu:process', 'dram:process', 'gpu:0'], samples: [[1000, 1000.25, 9, [1, 1, 7]]] }));
    expect(model.estimated).toEqual([true, true, null]);
  });

  it('keeps an hour of samples and drops older ones in batches', () => {
    const model = quietModel();
    model.apply(snapshot(1, { samples: [] }));
    const samples = [];
    for (let i = 1; i <= 4 * 3600 + 1000; i++) {
      samples.push(sample(1000 + i * 0.25));
    }
    model.apply(update(2, { samples }));
    const span = model.samples.lastT1 - model.samples.t1[0];
    expect(span).toBeLessThanOrEqual(3600 + 256 * 0.25);
    expect(span).toBeGreaterThanOrEqual(3600 - 0.25);
    expect(model.samples.firstEndingAfter(model.samples.lastT1)).toBe(model.samples.length - 1);
  });
});
