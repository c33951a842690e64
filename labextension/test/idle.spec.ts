import { betweenCells } from '../src/idle';
import { ITotals } from '../src/model';

function totals(energyJ: number, idleJ: number | null, idleS: number | null): ITotals {
  return { cells: 3, durationS: 4, energyJ, co2eG: null, equivalents: [], idleJ, idleS };
}

describe('betweenCells', () => {
  it('gives the energy between cells and its share of the session', () => {
    expect(betweenCells(totals(1800, 5400, 3723))).toEqual({
      text: '1.50 Wh (75.0%)',
      title: "Drawn while no cell ran: 1 h 02 min in all, 75.0% of the session's 2.00 Wh (cells and between cells)"
    });
    expect(betweenCells(totals(0.676, 1.94, 182))?.text).toBe('1.94 J (74.2%)');
  });

  it('follows the energy unit setting', () => {
    expect(betweenCells(totals(1800, 5400, 60), 'J')?.text).toBe('5.40 kJ (75.0%)');
    expect(betweenCells(totals(1, 2, 60), 'Wh')?.text).toBe('0.556 mWh (66.7%)');
  });

  it('shows no share when nothing was drawn, and nothing from a kernel that does not say', () => {
    expect(betweenCells(totals(0, 0, 2))).toEqual({ text: '0 J', title: 'Drawn while no cell ran: 2.00 s in all' });
    expect(betweenCells(totals(2, null, null))).toBeNull();
  });
});
