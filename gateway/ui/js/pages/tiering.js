// Tiering: per station, bytes on this node's disk against bytes in the bucket, and the bucket's
// health from /readyz.

import { api } from '../api.js';
import { h, replace, table } from '../dom.js';
import { count, bytes, ms } from '../format.js';

export const POLL_MS = 10000;

export async function render(ctx) {
  const bucketBox = h('div');
  const listBox = h('div', { id: 'tiering' });
  const load = async () => {
    const [ready, list] = await Promise.all([api('GET', '/readyz', { okStatuses: [503] }), api('GET', '/v1/stations?limit=1000')]);
    if (!ctx.alive) return;
    const t = ready?.tiering;
    replace(bucketBox, t
      ? h('p', {}, `Bucket ${t.bucket}: `, t.reachable === null ? 'not used yet' : t.reachable ? 'reachable' : `unreachable (${t.last_error || 'no detail'})`,
        `; ${bytes(t.lag_bytes)} waiting to be tiered.`)
      : h('p', { class: 'notice' }, 'This node has no tiering bucket ([tiering] in its configuration); everything stays on local disk.'));
    replace(listBox, table([
      ['Station', (st) => h('a', { href: `#/stations/${encodeURIComponent(st.name)}` }, st.name)],
      ['Tiers after', (st) => (st.config.tiering ? ms(st.config.tiering.after_ms) : 'never')],
      ['Local disk', (st) => bytes(st.stats.local_bytes), { num: true }],
      ['In the bucket', (st) => bytes(st.stats.tiered?.bytes ?? 0), { num: true }],
      ['Tiered segments', (st) => count(st.stats.tiered?.segments ?? 0), { num: true }],
      ['Tiered offsets', (st) => (st.stats.tiered?.first_offset === null || st.stats.tiered?.first_offset === undefined
        ? '–' : `${count(st.stats.tiered.first_offset)}–${count(st.stats.tiered.last_offset)}`)],
    ], list.stations, { empty: 'No stations.' }));
  };
  replace(ctx.main, h('h1', {}, 'Tiering'), bucketBox, listBox);
  await load();
  ctx.every(POLL_MS, load);
}
