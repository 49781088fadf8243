// REST hooks (/v1/hooks): push subscriptions to a station's new messages, as Zapier-like
// platforms create them. Listed with their delivery state, created (the signing secret is shown
// once) and deleted.

import { api, path } from '../api.js';
import { h, replace, table, field } from '../dom.js';
import { count, time } from '../format.js';

export const POLL_MS = 5000;
/** Pages of 1000 read at most per refresh: 20,000 hooks is far past what one page can show. */
const MAX_PAGES = 20;

/** Every hook the credentials may see, page after page. */
async function allHooks() {
  const hooks = [];
  let cursor = null;
  for (let page = 0; page < MAX_PAGES; page += 1) {
    const query = cursor ? `?limit=1000&cursor=${encodeURIComponent(cursor)}` : '?limit=1000';
    const r = await api('GET', `/v1/hooks${query}`);
    hooks.push(...r.hooks);
    cursor = r.next_cursor;
    if (!cursor) break;
  }
  return hooks;
}

export async function render(ctx) {
  const listBox = h('div', { id: 'hooks' });
  const secretBox = h('div');
  // The secret is in the answer that creates the hook, nowhere else.
  const showSecret = (hook) => replace(secretBox, h('section', { class: 'secret', id: 'hook-secret' },
    h('p', {}, h('strong', {}, `Signing secret of hook ${hook.id}, shown only now:`),
      ' the target verifies each delivery\'s webhook-signature with it.'),
    h('pre', {}, hook.secret)));
  const remove = (hook) => async () => {
    if (!window.confirm(`Delete hook ${hook.id}? Its target gets no more deliveries.`)) return;
    try {
      await api('DELETE', path('/v1/hooks', hook.id));
      ctx.info(`Hook ${hook.id} deleted.`);
      await load();
    } catch (err) {
      ctx.error(err);
    }
  };
  const load = async () => {
    const hooks = await allHooks();
    if (!ctx.alive) return;
    replace(listBox, table([
      // A hook is a push group named by its id: its page has the lag, attempts and controls.
      ['Hook', (k) => h('a', { href: `#/stations/${encodeURIComponent(k.station)}/groups/${encodeURIComponent(k.id)}` }, k.id)],
      ['Station', (k) => h('a', { href: `#/stations/${encodeURIComponent(k.station)}` }, k.station)],
      ['Target', (k) => h('code', {}, k.target_url)],
      ['State', (k) => h('span', { class: k.push.state === 'active' ? 'badge ok' : 'badge bad' }, k.push.state)],
      ['Delivered', (k) => count(k.push.delivered_total), { num: true }],
      ['Failed', (k) => count(k.push.failed_total), { num: true }],
      ['Last error', (k) => k.push.last_error || '–'],
      ['Created', (k) => time(k.created_at)],
      ['', (k) => h('button', { type: 'button', class: 'danger', 'aria-label': `Delete hook ${k.id}`, onclick: remove(k) }, 'Delete')],
    ], hooks, { empty: 'No hooks. A hook sends every new message of a station to its target URL.' }));
  };
  const station = h('input', { name: 'hook_station', required: true, maxlength: 128, placeholder: 'orders' });
  const target = h('input', { name: 'hook_target', type: 'url', required: true, placeholder: 'the receiver\'s http(s) URL' });
  const secret = h('input', { name: 'hook_secret', type: 'password', autocomplete: 'off', placeholder: 'whsec_… (empty: one is made)' });
  const form = h('form', { class: 'stack', onsubmit: async (e) => {
    e.preventDefault();
    const body = { station: station.value.trim(), target_url: target.value.trim() };
    if (secret.value) body.secret = secret.value;
    try {
      const hook = await api('POST', '/v1/hooks', { json: body });
      ctx.clearAlert();
      showSecret(hook);
      secret.value = '';
      await load();
    } catch (err) {
      ctx.error(err);
    }
  } }, field('Station', station), field('Target URL', target), field('Signing secret (optional)', secret),
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Create hook')));
  replace(ctx.main, h('h1', {}, 'Hooks'),
    h('p', { class: 'muted' }, `Each hook delivers the station's new messages to its target, signed (Standard Webhooks); a 410 from the target deletes it. Refreshed every ${POLL_MS / 1000} s.`),
    secretBox, listBox, h('section', { class: 'card' }, h('h2', {}, 'New hook'), form));
  await load();
  ctx.every(POLL_MS, load);
}
