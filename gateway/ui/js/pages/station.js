// One station: its stats and configuration, its consumer groups, a message browser (browsing
// delivers nothing) and a form to produce a test message.

import { api, path } from '../api.js';
import { h, replace, table, field, denied } from '../dom.js';
import { pushFields } from '../push_form.js';
import { count, bytes, time, ms, payloadText, isBinary, base64ToBytes, headerLines } from '../format.js';

const PAGE = 20;

function stat(label, value) {
  return h('div', { class: 'stat' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value));
}

/** One message as the browser shows it: a summary line, then headers and payload. */
export function messageView(m, { open = false } = {}) {
  const binary = isBinary(m);
  const pre = h('pre', { class: 'payload', 'data-offset': m.offset }, payloadText(m, 'hex'));
  const size = binary ? base64ToBytes(m.payload_base64).length : null;
  const headerRows = Object.entries(m.headers || {});
  const view = h('details', { class: 'message card', 'data-offset': m.offset, open },
    h('summary', {}, h('strong', {}, `#${m.offset}`), ` · ${time(m.produced_at)} · `, h('code', {}, m.content_type),
      binary ? ` · ${bytes(size)} binary` : ''),
    headerRows.length
      ? table([['Header', ([k]) => h('code', {}, k)], ['Value', ([, v]) => h('code', {}, v)]], headerRows)
      : h('p', { class: 'muted' }, 'No headers.'));
  if (binary) {
    let as = 'hex';
    const tabs = h('div', { class: 'tabs', role: 'group', 'aria-label': 'Show binary payload as' });
    const draw = () => {
      pre.textContent = payloadText(m, as);
      replace(tabs, ['hex', 'base64'].map((k) => h('button', { type: 'button', 'aria-pressed': String(as === k), onclick: () => { as = k; draw(); } }, k)));
    };
    draw();
    view.append(tabs);
  }
  view.append(pre);
  return view;
}

/** Message headers as the produce request sends them: `Depot-Header-<name>`. */
function parseHeaders(text) {
  return Object.fromEntries(Object.entries(headerLines(text)).map(([k, v]) => [`Depot-Header-${k}`, v]));
}

export async function render(ctx, name) {
  const base = path('/v1/stations', name);
  const statsBox = h('div', { class: 'grid', 'aria-live': 'polite' });
  const configBox = h('div');
  const groupsBox = h('div');
  const messagesBox = h('div', { id: 'messages' });
  const pager = h('div', { class: 'actions' });

  const load = async () => {
    const st = await api('GET', base);
    if (!ctx.alive) return;
    const t = st.stats.tiered || { bytes: 0, segments: 0 };
    replace(statsBox,
      stat('Messages', count(st.stats.messages)),
      stat('Size', bytes(st.stats.bytes)),
      stat('On local disk', bytes(st.stats.local_bytes)),
      stat('Tiered', `${bytes(t.bytes)} (${count(t.segments)} segments)`),
      stat('Offsets', st.stats.last_offset === null ? 'empty' : `${count(st.stats.first_offset)}–${count(st.stats.last_offset)}`),
      stat('Created', time(st.created_at)));
    const c = st.config;
    replace(configBox, h('details', { class: 'card' }, h('summary', {}, 'Configuration'),
      table([['Setting', ([k]) => k], ['Value', ([, v]) => v]], [
        ['Retention: max age', ms(c.retention?.max_age_ms)],
        ['Retention: max messages', count(c.retention?.max_messages)],
        ['Retention: max bytes', c.retention?.max_bytes ? bytes(c.retention.max_bytes) : '–'],
        ['Retention: until acked by every group', c.retention?.ack_based ? 'yes' : 'no'],
        ['Replicas', String(c.replicas)],
        ['Dedup window', ms(c.dedup_window_ms)],
        ['Max message size', bytes(c.max_message_bytes)],
        ['Dead letters', c.dead_letter?.enabled ? `on, kept ${ms(c.dead_letter.retention_ms)}` : 'off'],
        ['Tiering', c.tiering ? `after ${ms(c.tiering.after_ms)}` : 'off'],
      ])));
    replace(groupsBox, table([
      ['Group', (g) => h('a', { href: `#/stations/${encodeURIComponent(name)}/groups/${encodeURIComponent(g.name)}` }, g.name)],
      ['Lag', (g) => count(g.lag), { num: true }],
      ['Pending', (g) => count(g.pending), { num: true }],
    ], st.consumer_groups, { empty: 'No consumer groups.' }));
  };

  // Newest first by default; "from offset" pages upward from there. The cursor keeps the order.
  let cursor = null;
  let order = 'desc';
  const fromOffset = h('input', { name: 'from_offset', inputmode: 'numeric', pattern: '[0-9]+', size: 10 });
  const browse = async (from, start) => {
    const q = new URLSearchParams({ order, limit: String(PAGE) });
    if (from) q.set('cursor', from);
    else if (start !== undefined) q.set('from_offset', String(start));
    const page = await api('GET', `${base}/messages?${q}`);
    if (!ctx.alive) return;
    cursor = page.next_cursor || null;
    replace(messagesBox, page.messages.length
      ? page.messages.map((m) => messageView(m))
      : h('p', { class: 'muted' }, from || start !== undefined ? 'No more messages.' : 'No messages.'));
    replace(pager,
      h('button', { type: 'button', class: 'secondary', onclick: () => { order = 'desc'; browse(null).catch(ctx.error); } }, 'Newest'),
      cursor ? h('button', { type: 'button', class: 'secondary', onclick: () => browse(cursor).catch(ctx.error) }, order === 'desc' ? 'Older' : 'Newer') : null,
      h('form', { class: 'row', onsubmit: (e) => {
        e.preventDefault();
        if (!/^\d+$/.test(fromOffset.value.trim())) {
          ctx.error(new Error('The offset is a whole number.'));
          return;
        }
        order = 'asc';
        browse(null, Number(fromOffset.value.trim())).catch(ctx.error);
      } }, field('From offset', fromOffset), h('button', { type: 'submit', class: 'secondary' }, 'Go')));
  };

  // Produce a test message.
  const payload = h('textarea', { name: 'payload', rows: 5 }, '{"hello": "depot"}');
  const contentType = h('select', { name: 'content_type' },
    h('option', { value: 'application/json' }, 'application/json'),
    h('option', { value: 'text/plain; charset=utf-8' }, 'text/plain'),
    h('option', { value: 'application/octet-stream' }, 'application/octet-stream (enter base64)'));
  const headers = h('textarea', { name: 'headers', rows: 2, placeholder: 'source: dashboard' });
  const idem = h('input', { name: 'idempotency_key', maxlength: 256 });
  const produced = h('p', { role: 'status', class: 'ok' });
  const produce = h('form', { class: 'stack', onsubmit: async (e) => {
    e.preventDefault();
    produced.textContent = '';
    try {
      const extra = parseHeaders(headers.value);
      if (idem.value) extra['Idempotency-Key'] = idem.value;
      const binary = contentType.value === 'application/octet-stream';
      const body = binary ? base64ToBytes(payload.value.trim()) : payload.value;
      const r = await api('POST', `${base}/messages`, { body, contentType: contentType.value, headers: extra });
      produced.textContent = r.duplicate ? `Duplicate of offset ${r.offset}.` : `Stored at offset ${r.offset}.`;
      order = 'desc';
      await Promise.all([load(), browse(null).catch((e2) => denied(messagesBox, e2))]);
    } catch (err) {
      ctx.error(err);
    }
  } },
  field('Payload', payload), field('Content type', contentType),
  field('Headers (one "name: value" per line)', headers), field('Idempotency key (optional)', idem),
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Produce')), produced);

  // New consumer group.
  const groupName = h('input', { name: 'group', required: true, maxlength: 128, placeholder: 'billing' });
  const start = h('select', { name: 'start' }, h('option', { value: 'earliest' }, 'earliest'), h('option', { value: 'latest' }, 'latest'));
  let push = pushFields();
  const pushSettings = h('div', { class: 'stack' }, push.settings);
  const pushDetails = h('details', { class: 'wide', id: 'push-settings' }, h('summary', {}, 'Push settings (with a push URL)'), pushSettings);
  const pushUrlBox = h('div', {}, field('Push URL (optional)', push.url));
  const newGroup = h('form', { class: 'row', onsubmit: async (e) => {
    e.preventDefault();
    try {
      const body = { start: start.value };
      const pushBody = push.read();
      if (pushBody) body.push = pushBody;
      const g = await api('PUT', path(base, 'consumer-groups', groupName.value), { json: body });
      // A push group's signing secret is in this answer only.
      ctx.info(g.push?.secret
        ? `Push group ${groupName.value} created. Its signing secret, shown only now: ${g.push.secret}`
        : `Consumer group ${groupName.value} created.`);
      // A fresh set of fields: the next group starts from the defaults again.
      push = pushFields();
      replace(pushSettings, push.settings);
      replace(pushUrlBox, field('Push URL (optional)', push.url));
      groupName.value = '';
      await load();
    } catch (err) {
      ctx.error(err);
    }
  } }, field('New consumer group', groupName), field('Start', start), pushUrlBox, pushDetails,
  h('button', { type: 'submit' }, 'Create group'));

  const remove = h('button', { type: 'button', class: 'danger', onclick: async () => {
    if (!window.confirm(`Delete station ${name} and all its messages?`)) return;
    try {
      await api('DELETE', base);
      location.hash = '#/';
    } catch (err) {
      ctx.error(err);
    }
  } }, 'Delete station');

  replace(ctx.main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Stations'), ' / ', name),
    h('h1', {}, `Station ${name}`),
    statsBox, configBox,
    h('div', { class: 'actions' }, h('a', { href: `#/stations/${encodeURIComponent(name)}/dead-letters` }, 'Dead letters'), remove),
    h('h2', {}, 'Consumer groups'), groupsBox, newGroup,
    h('div', { class: 'split' },
      h('section', {}, h('h2', {}, 'Produce a test message'), h('div', { class: 'card' }, produce)),
      h('section', {}, h('h2', {}, 'Messages, newest first'), pager, messagesBox)));
  // A key may produce without consuming (browsing needs consume): each part says what it may not.
  await Promise.all([load(), browse(null).catch((e) => denied(messagesBox, e))]);
  ctx.every(5000, load);
}
