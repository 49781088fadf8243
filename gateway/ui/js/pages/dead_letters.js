// A station's dead letters: filter by group and reason, read each payload, redrive the selected
// ones or all (of the filtered group), delete.

import { api, path } from '../api.js';
import { h, replace, field } from '../dom.js';
import { count, time } from '../format.js';
import { messageView } from './station.js';

export const POLL_MS = 5000;

export async function render(ctx, station) {
  const base = path('/v1/stations', station, 'dead-letters');
  const selected = new Set();
  let rows = [];
  let cursor = null;
  let shown = 100;
  let lastSignature = '';

  const group = h('input', { name: 'consumer_group', maxlength: 128, placeholder: 'every group' });
  const reason = h('select', { name: 'reason' },
    h('option', { value: '' }, 'any'), h('option', { value: 'max_deliveries' }, 'max_deliveries'),
    h('option', { value: 'explicit' }, 'explicit'), h('option', { value: 'expired' }, 'expired'));
  const listBox = h('div', { id: 'dead-letters', 'aria-live': 'polite' });
  const summary = h('p', { class: 'muted', role: 'status' });
  const redriveSelected = h('button', { type: 'button', disabled: true }, 'Redrive selected');
  const deleteSelected = h('button', { type: 'button', class: 'danger', disabled: true }, 'Delete selected');
  const redriveAll = h('button', { type: 'button', class: 'secondary' }, 'Redrive all');
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Show more');

  const syncButtons = () => {
    redriveSelected.disabled = selected.size === 0;
    deleteSelected.disabled = selected.size === 0;
    redriveSelected.textContent = `Redrive selected (${selected.size})`;
    deleteSelected.textContent = `Delete selected (${selected.size})`;
    redriveAll.textContent = group.value ? `Redrive all of ${group.value}` : 'Redrive all';
  };

  const draw = () => {
    const visible = new Set(rows.map((d) => d.id));
    for (const id of [...selected]) if (!visible.has(id)) selected.delete(id);
    summary.textContent = `${rows.length}${cursor ? '+' : ''} dead letter${rows.length === 1 ? '' : 's'}; refreshed every ${POLL_MS / 1000} s.`;
    more.hidden = !cursor;
    syncButtons();
    if (!rows.length) {
      replace(listBox, h('p', { class: 'muted' }, 'No dead letters.'));
      return;
    }
    const all = h('input', { type: 'checkbox', 'aria-label': 'Select all shown', checked: rows.every((d) => selected.has(d.id)),
      onchange: (e) => {
        rows.forEach((d) => (e.target.checked ? selected.add(d.id) : selected.delete(d.id)));
        draw();
      } });
    const body = rows.map((d) => h('tr', { 'data-id': d.id },
      h('td', { 'data-label': 'Select' }, h('input', { type: 'checkbox', 'aria-label': `Select dead letter ${d.id}`, checked: selected.has(d.id),
        onchange: (e) => {
          if (e.target.checked) selected.add(d.id); else selected.delete(d.id);
          syncButtons();
        } })),
      h('td', { 'data-label': 'Id', class: 'num' }, String(d.id)),
      h('td', { 'data-label': 'Offset', class: 'num' }, count(d.offset)),
      h('td', { 'data-label': 'Group' }, d.consumer_group),
      h('td', { 'data-label': 'Reason' }, d.reason),
      h('td', { 'data-label': 'Attempts', class: 'num' }, count(d.attempts)),
      h('td', { 'data-label': 'Last error' }, d.last_error || '–'),
      h('td', { 'data-label': 'Dead at' }, time(d.dead_at)),
      h('td', { 'data-label': 'Payload' }, d.message ? messageView(d.message) : h('span', { class: 'muted' }, 'expired')),
      h('td', { 'data-label': 'Delete' }, h('button', { type: 'button', class: 'secondary', 'aria-label': `Delete dead letter ${d.id}`,
        onclick: () => remove([d.id]) }, 'Delete'))));
    replace(listBox, h('div', { class: 'table-wrap' }, h('table', { class: 'responsive' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, all),
        ['Id', 'Offset', 'Group', 'Reason', 'Attempts', 'Last error', 'Dead at', 'Payload', ''].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, body))));
  };

  const load = async () => {
    const q = new URLSearchParams({ include_payload: 'true', limit: String(Math.min(shown, 1000)) });
    if (group.value) q.set('consumer_group', group.value);
    if (reason.value) q.set('reason', reason.value);
    const page = await api('GET', `${base}?${q}`);
    if (!ctx.alive) return;
    // Redrawing closes open payloads: only when something changed.
    const signature = JSON.stringify(page);
    if (signature === lastSignature) return;
    lastSignature = signature;
    rows = page.dead_letters;
    cursor = page.next_cursor || null;
    draw();
  };

  const remove = async (ids) => {
    if (!window.confirm(`Delete ${ids.length} dead letter${ids.length === 1 ? '' : 's'}? This cannot be undone.`)) return;
    try {
      for (const id of ids) {
        await api('DELETE', path(base, String(id)));
        selected.delete(id);
      }
      ctx.info(`Deleted ${ids.length}.`);
      await load();
    } catch (err) {
      ctx.error(err);
    }
  };

  const redrive = async (body) => {
    try {
      const r = await api('POST', `${base}/redrive`, { json: body });
      selected.clear();
      ctx.info(`Redriven: ${r.redriven}.`);
      await load();
    } catch (err) {
      ctx.error(err);
    }
  };

  redriveSelected.addEventListener('click', () => redrive({ ids: [...selected] }));
  deleteSelected.addEventListener('click', () => remove([...selected]));
  redriveAll.addEventListener('click', () => {
    const what = group.value ? `every dead letter of ${group.value}` : 'every dead letter of this station';
    if (window.confirm(`Redrive ${what}?`)) redrive(group.value ? { consumer_group: group.value } : {});
  });
  more.addEventListener('click', () => {
    shown += 100;
    load().catch(ctx.error);
  });
  const filters = h('form', { class: 'row', onsubmit: (e) => {
    e.preventDefault();
    selected.clear();
    lastSignature = '';
    load().catch(ctx.error);
  } }, field('Consumer group', group), field('Reason', reason), h('button', { type: 'submit', class: 'secondary' }, 'Filter'));

  replace(ctx.main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Stations'), ' / ',
      h('a', { href: `#/stations/${encodeURIComponent(station)}` }, station), ' / dead letters'),
    h('h1', {}, `Dead letters of ${station}`),
    filters, h('div', { class: 'actions' }, redriveSelected, redriveAll, deleteSelected), summary, listBox, more);
  await load();
  ctx.every(POLL_MS, load);
}
