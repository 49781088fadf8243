// One consumer group: lag and pending now, lag over time (the node's samples of the past hour,
// then the page's own while it is open), seek, and for a push group its delivery state and
// controls.

import { api, path } from '../api.js';
import { h, replace, table, field } from '../dom.js';
import { count, time, ms } from '../format.js';
import { lineChart } from '../chart.js';
import { pushFields } from '../push_form.js';

export const POLL_MS = 2000;
const KEEP_MS = 3600 * 1000;
/** Samples per group, kept for the tab's life so coming back to a group keeps its history. */
const history = new Map();

/**
 * The node's samples of the group's past hour (every 10 s) followed by this tab's own that are
 * newer, so the chart starts with an hour even on a fresh page. Without the node's (an older
 * node, a failed request) the tab's own are kept.
 */
async function withNodeHistory(station, group, samples) {
  let node;
  try {
    node = await api('GET', path('/ui/data/stations', station, 'groups', group, 'lag'));
  } catch {
    return samples;
  }
  const fromNode = (node?.samples || []).map((p) => ({ t: p.at_ms, v: p.lag }));
  const last = fromNode.length ? fromNode[fromNode.length - 1].t : -Infinity;
  return fromNode.concat(samples.filter((p) => p.t > last));
}

function stat(label, value, attrs = {}) {
  return h('div', { class: 'stat' }, h('div', { class: 'label' }, label), h('div', { class: 'value', ...attrs }, value));
}

export async function render(ctx, station, group) {
  const base = path('/v1/stations', station, 'consumer-groups', group);
  const key = `${station}\u0000${group}`;
  const samples = await withNodeHistory(station, group, history.get(key) || []);
  history.set(key, samples);
  const statsBox = h('div', { class: 'grid', 'aria-live': 'polite' });
  const chartBox = h('div');
  const pushBox = h('div');
  const configBox = h('div');
  const settingsBox = h('div');
  /** The group's configuration as last read: a PUT replaces all of it, so a save sends it back. */
  let latest = null;

  // Drawn once, not on every poll, so what is being typed stays.
  const pushSettings = (g) => {
    const fields = pushFields(g.config.push);
    const form = h('form', { class: 'stack', id: 'push-settings-form', onsubmit: async (e) => {
      e.preventDefault();
      try {
        const push = fields.read();
        if (!push) throw new Error('A push group needs a URL (delete the group to stop pushing).');
        const { start, ack_wait_ms, max_deliveries, backoff_ms, max_pending } = latest;
        await api('PUT', base, { json: { start, ack_wait_ms, max_deliveries, backoff_ms, max_pending, push } });
        fields.forgetSecret();
        ctx.info('Push settings saved.');
        await load();
      } catch (err) {
        ctx.error(err);
      }
    } }, field('Push URL', fields.url), fields.settings,
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Save push settings')));
    return h('details', { class: 'card' }, h('summary', {}, 'Push settings'), form);
  };

  const pushControls = (g) => {
    if (!g.push) return null;
    const p = g.push;
    const act = (what, body) => async () => {
      try {
        const r = await api('POST', `${base}/push/${what}`, body === undefined ? {} : { json: body });
        if (what === 'rotate-secret') ctx.info(`New secret (shown once): ${r.secret}`);
        else if (what === 'test' && r.error) ctx.error(new Error(`Test event failed: ${r.error}`));
        else if (what === 'test') ctx.info(`Test event answered ${r.status} in ${r.latency_ms} ms.`);
        await load();
      } catch (err) {
        ctx.error(err);
      }
    };
    return h('section', { class: 'card' }, h('h2', {}, 'Push delivery'),
      h('p', {}, 'To ', h('code', {}, p.url), `; secret ends in ${p.secret_hint || '–'}.`),
      h('div', { class: 'grid' },
        stat('State', p.state + (p.disabled_reason ? ` (${p.disabled_reason})` : ''), { id: 'push-state' }),
        stat('In flight', count(p.in_flight)), stat('Delivered', count(p.delivered_total)), stat('Failed', count(p.failed_total)),
        stat('Last attempt', time(p.last_attempt_at)), stat('Last success', time(p.last_success_at))),
      p.last_error ? h('p', { class: 'error' }, `Last error: ${p.last_error}`) : null,
      h('div', { class: 'actions' },
        p.state === 'active'
          ? h('button', { type: 'button', class: 'secondary', onclick: act('pause') }, 'Pause')
          : h('button', { type: 'button', class: 'secondary', onclick: act('resume') }, 'Resume'),
        h('button', { type: 'button', class: 'secondary', onclick: act('test', {}) }, 'Send test event'),
        h('button', { type: 'button', class: 'secondary', onclick: act('rotate-secret', {}) }, 'Rotate secret')));
  };

  const attemptsBox = h('div', { id: 'push-attempts' });
  const loadAttempts = async () => {
    const r = await api('GET', `${base}/push/attempts?limit=20`);
    if (!ctx.alive) return;
    replace(attemptsBox, h('h3', {}, 'Latest delivery attempts'), table([
      ['At', (a) => time(a.at)],
      ['Offset', (a) => count(a.offset), { num: true }],
      ['Attempt', (a) => count(a.attempt), { num: true }],
      ['Status', (a) => (a.status === null || a.status === undefined ? '–' : String(a.status))],
      ['Latency', (a) => `${count(a.latency_ms)} ms`, { num: true }],
      ['Error', (a) => a.error || '–'],
      ['Response', (a) => (a.response_excerpt ? h('code', {}, a.response_excerpt) : '–')],
    ], r.attempts, { empty: 'No attempts yet.' }));
  };

  const load = async () => {
    const g = await api('GET', base);
    if (!ctx.alive) return;
    const now = Date.now();
    samples.push({ t: now, v: g.lag });
    while (samples.length && samples[0].t < now - KEEP_MS) samples.shift();
    replace(statsBox,
      stat('Lag', count(g.lag), { id: 'group-lag', 'data-lag': String(g.lag) }),
      stat('Pending', count(g.pending)),
      stat('Next to deliver', count(g.delivered_offset)),
      stat('Acked below', count(g.acked_floor)),
      stat('Dead-lettered', count(g.dead_lettered)));
    // Drawn at the box's own width, so its text is the CSS size on a phone as on a laptop.
    const width = Math.max(280, Math.round(chartBox.clientWidth || 1000));
    const height = Math.round(Math.min(220, Math.max(150, width * 0.3)));
    replace(chartBox, lineChart(samples, { width, height, label: `Lag of ${group} since ${new Date(samples[0].t).toLocaleTimeString()}` }),
      h('p', { class: 'muted', id: 'lag-samples', 'data-samples': String(samples.length) },
        `${samples.length} samples: the node's, every 10 s over the past hour, then every ${POLL_MS / 1000} s while this page is open.`));
    replace(pushBox, pushControls(g));
    latest = g.config;
    if (g.push && !settingsBox.hasChildNodes()) replace(settingsBox, pushSettings(g));
    if (g.push) {
      pushBox.append(attemptsBox);
      await loadAttempts();
    }
    const c = g.config || {};
    replace(configBox, h('details', { class: 'card' }, h('summary', {}, 'Configuration'),
      table([['Setting', ([k]) => k], ['Value', ([, v]) => v]], [
        ['Ack wait', ms(c.ack_wait_ms)], ['Max deliveries', count(c.max_deliveries)],
        ['Backoff', (c.backoff_ms || []).map(ms).join(', ') || 'none'], ['Max pending', count(c.max_pending)],
      ])));
  };

  const seekTo = h('select', { name: 'seek_by' }, h('option', { value: 'offset' }, 'offset'), h('option', { value: 'time' }, 'time (UTC)'));
  const seekValue = h('input', { name: 'seek_value', required: true, placeholder: '0 or 2026-01-01T00:00:00Z' });
  const seek = h('form', { class: 'row', onsubmit: async (e) => {
    e.preventDefault();
    try {
      let body;
      if (seekTo.value === 'offset') {
        if (!/^\d+$/.test(seekValue.value.trim())) throw new Error('The offset is a whole number.');
        body = { offset: Number(seekValue.value.trim()) };
      } else {
        const d = new Date(seekValue.value.trim());
        if (Number.isNaN(d.getTime())) throw new Error('The time is not a date (e.g. 2026-01-01T00:00:00Z).');
        body = { time: d.toISOString() };
      }
      await api('POST', `${base}/seek`, { json: body });
      ctx.info(`Group ${group} moved to ${seekTo.value} ${seekValue.value}.`);
      await load();
    } catch (err) {
      ctx.error(err);
    }
  } }, field('Seek by', seekTo), field('To', seekValue), h('button', { type: 'submit' }, 'Seek'));

  const remove = h('button', { type: 'button', class: 'danger', onclick: async () => {
    if (!window.confirm(`Delete consumer group ${group}?`)) return;
    try {
      await api('DELETE', base);
      location.hash = `#/stations/${encodeURIComponent(station)}`;
    } catch (err) {
      ctx.error(err);
    }
  } }, 'Delete group');

  replace(ctx.main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Stations'), ' / ',
      h('a', { href: `#/stations/${encodeURIComponent(station)}` }, station), ' / ', group),
    h('h1', {}, `Consumer group ${group}`),
    statsBox, pushBox, settingsBox,
    h('h2', {}, 'Lag over time'), chartBox,
    h('h2', {}, 'Seek'), seek,
    configBox,
    h('div', { class: 'actions' }, h('a', { href: `#/stations/${encodeURIComponent(station)}/dead-letters` }, 'Dead letters'), remove));
  await load();
  ctx.every(POLL_MS, load);
}
