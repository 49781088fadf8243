// Every push group of the stations these credentials see, with its delivery state.

import { api, path } from '../api.js';
import { h, replace, table } from '../dom.js';
import { count, time } from '../format.js';

export const POLL_MS = 5000;

export async function render(ctx) {
  const listBox = h('div', { id: 'push-groups' });
  const load = async () => {
    const stations = (await api('GET', '/v1/stations?limit=1000')).stations;
    const rows = [];
    for (const st of stations) {
      let groups = [];
      try {
        groups = (await api('GET', path('/v1/stations', st.name, 'consumer-groups'))).consumer_groups;
      } catch (e) {
        if (e.status !== 403) throw e;
      }
      for (const g of groups) if (g.push) rows.push({ station: st.name, g });
    }
    if (!ctx.alive) return;
    replace(listBox, table([
      ['Group', ({ station, g }) => h('a', { href: `#/stations/${encodeURIComponent(station)}/groups/${encodeURIComponent(g.name)}` }, `${station} / ${g.name}`)],
      ['URL', ({ g }) => h('code', {}, g.push.url)],
      ['State', ({ g }) => h('span', { class: g.push.state === 'active' ? 'badge ok' : 'badge bad' }, g.push.state)],
      ['Lag', ({ g }) => count(g.lag), { num: true }],
      ['In flight', ({ g }) => count(g.push.in_flight), { num: true }],
      ['Delivered', ({ g }) => count(g.push.delivered_total), { num: true }],
      ['Failed', ({ g }) => count(g.push.failed_total), { num: true }],
      ['Last error', ({ g }) => g.push.last_error || '–'],
      ['Last success', ({ g }) => time(g.push.last_success_at)],
    ], rows, { empty: 'No push groups. A consumer group with a push URL delivers each message to it.' }));
  };
  replace(ctx.main, h('h1', {}, 'Push groups'), h('p', { class: 'muted' }, `Refreshed every ${POLL_MS / 1000} s; open a group to pause, resume, test or rotate its secret.`), listBox);
  await load();
  ctx.every(POLL_MS, load);
}
