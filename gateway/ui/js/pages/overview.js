// Every station the credentials may see, with counts, sizes, rates and each group's lag. Rates
// are computed here from successive polls: the API reports totals, not rates.

import { api, path } from '../api.js';
import { h, replace, table, field } from '../dom.js';
import { count, bytes, rate } from '../format.js';

export const POLL_MS = 3000;

async function allStations() {
  const stations = [];
  let cursor = '';
  do {
    const page = await api('GET', `/v1/stations?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    stations.push(...page.stations);
    cursor = page.next_cursor || '';
  } while (cursor);
  return stations;
}

/** The offset after the newest message: what has ever been produced, as a counter. */
function produced(st) {
  return st.stats.last_offset === null || st.stats.last_offset === undefined ? st.stats.first_offset : st.stats.last_offset + 1;
}

export async function render(ctx) {
  const list = h('div', { id: 'stations', 'aria-live': 'polite' });
  const name = h('input', { name: 'station', required: true, pattern: '[a-z0-9][a-z0-9._\\-]*', maxlength: 128, placeholder: 'orders' });
  const createResult = h('span', { class: 'muted', role: 'status' });
  const create = h('form', { class: 'row', onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api('PUT', path('/v1/stations', name.value), { json: {} });
      createResult.textContent = `Station ${name.value} created.`;
      name.value = '';
      await poll();
    } catch (err) {
      ctx.error(err);
    }
  } }, field('New station', name), h('button', { type: 'submit' }, 'Create station'), createResult);
  const updated = h('p', { class: 'muted', role: 'status' });
  replace(ctx.main, h('h1', {}, 'Stations'), create, updated, list);

  let previous = new Map();
  const poll = async () => {
    const stations = await allStations();
    const now = performance.now();
    const next = new Map();
    const rows = stations.map((st) => {
      const before = previous.get(st.name);
      const dt = before ? (now - before.t) / 1000 : 0;
      const made = produced(st);
      const row = { st, produceRate: null, groupRates: new Map() };
      if (before && dt > 0) {
        const producedNow = Math.max(0, made - before.produced);
        row.produceRate = producedNow / dt;
        for (const g of st.consumer_groups) {
          if (before.lags.has(g.name)) {
            row.groupRates.set(g.name, Math.max(0, producedNow - (g.lag - before.lags.get(g.name))) / dt);
          }
        }
      }
      next.set(st.name, { t: now, produced: made, lags: new Map(st.consumer_groups.map((g) => [g.name, g.lag])) });
      return row;
    });
    previous = next;
    if (!ctx.alive) return;
    updated.textContent = `${stations.length} station${stations.length === 1 ? '' : 's'}; updated ${new Date().toLocaleTimeString()}, every ${POLL_MS / 1000} s.`;
    replace(list, table([
      ['Station', ({ st }) => h('a', { href: `#/stations/${encodeURIComponent(st.name)}` }, st.name)],
      ['Messages', ({ st }) => count(st.stats.messages), { num: true }],
      ['Size', ({ st }) => bytes(st.stats.bytes), { num: true }],
      ['Produce rate', ({ produceRate }) => rate(produceRate), { num: true }],
      ['Consumer groups: lag, consume rate', ({ st, groupRates }) => (st.consumer_groups.length
        ? h('ul', { class: 'plain' }, st.consumer_groups.map((g) => h('li', {},
          h('a', { href: `#/stations/${encodeURIComponent(st.name)}/groups/${encodeURIComponent(g.name)}` }, g.name),
          ': lag ', h('span', { 'data-lag': `${st.name}/${g.name}` }, count(g.lag)),
          `, ${rate(groupRates.get(g.name))}`)))
        : h('span', { class: 'muted' }, 'none'))],
      ['Dead letters', ({ st }) => h('a', { href: `#/stations/${encodeURIComponent(st.name)}/dead-letters` }, 'view')],
    ], rows, { empty: 'No stations yet (or none these credentials may see). Create one above.' }));
  };
  await poll();
  ctx.every(POLL_MS, poll);
}
