// The widgets package needs a DOM at import; these tests need only the pure matching functions.
jest.mock('@lumino/widgets', () => ({ Widget: class {} }));

import { indexRuns, shownRun } from '../src/badges';
import { ICellRecord, parseCell } from '../src/model';

function run(cellId: string | null, count: number | null, energy: number): ICellRecord {
  const record = parseCell({
    execution_count: count,
    cell_id: cellId,
    started_at: 1.7e9 + (count ?? 0),
    duration_s: 1,
    energy_j: energy
  });
  if (!record) {
    throw new Error('test record did not parse');
  }
  return record;
}

describe('shownRun', () => {
  // The kernel's records, oldest first: cell a ran as [2] and again as [6]; b as [3]; c as [5].
  const records = [run('a', 2, 10), run('b', 3, 20), run('c', 5, 30), run('a', 6, 40)];
  const runs = indexRuns(records);

  it('gives a cell the record of the run its prompt shows', () => {
    expect(shownRun(runs, 'a', 6)?.energyJ).toBe(40);
    expect(shownRun(runs, 'b', 3)?.energyJ).toBe(20);
  });

  it('gives a cell reloaded as saved before its newest run the record of the run it shows', () => {
    expect(shownRun(runs, 'a', 2)?.energyJ).toBe(10);
  });

  it('gives nothing to a cell that shows no run (reloaded unsaved, cleared, never run)', () => {
    expect(shownRun(runs, 'c', null)).toBeUndefined();
    expect(shownRun(runs, 'never-ran', null)).toBeUndefined();
  });

  it('gives nothing to a cell whose shown run was not measured here', () => {
    expect(shownRun(runs, 'b', 4)).toBeUndefined(); // a count from an earlier kernel, say
    expect(shownRun(runs, 'd', 3)).toBeUndefined(); // another cell's count
  });

  it('ignores records without a cell id or an execution count', () => {
    const loose = indexRuns([run(null, 7, 1), run('e', null, 1)]);
    expect(loose.size).toBe(0);
    expect(shownRun(loose, 'e', 7)).toBeUndefined();
  });

  it('lets the later of two records of one run win', () => {
    expect(shownRun(indexRuns([run('a', 1, 1), run('a', 1, 2)]), 'a', 1)?.energyJ).toBe(2);
  });
});
