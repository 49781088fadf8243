// Sources (webhooks in): each with its station, verification scheme, ingest URL and totals.

import { api, path } from '../api.js';
import { h, replace, table, field } from '../dom.js';
import { count, time } from '../format.js';

const SCHEMES = ['github', 'stripe', 'shopify', 'standard_webhooks', 'hmac_sha256'];

export async function render(ctx) {
  const listBox = h('div', { id: 'sources' });
  const urlBox = h('div');
  // The token is stored hashed: its URL is in the answers that create or rotate it, nowhere else.
  const showUrl = (src) => replace(urlBox, src.ingest_url ? h('section', { class: 'secret', id: 'ingest-url' },
    h('p', {}, h('strong', {}, `Ingest URL of ${src.name}, shown only now:`), ' give it to the sender.'),
    h('pre', {}, `${location.origin}${src.ingest_url}`)) : null);
  const act = (fn, done) => async () => {
    try {
      await fn();
      ctx.info(done);
      await load();
    } catch (err) {
      ctx.error(err);
    }
  };
  const load = async () => {
    const r = await api('GET', '/v1/sources');
    if (!ctx.alive) return;
    replace(listBox, table([
      ['Source', (src) => src.name],
      ['Station', (src) => h('a', { href: `#/stations/${encodeURIComponent(src.station)}` }, src.station)],
      ['Verification', (src) => src.verify?.scheme || 'none'],
      ['Accepted', (src) => count(src.accepted_total), { num: true }],
      ['Rejected', (src) => count(src.rejected_total), { num: true }],
      ['Created', (src) => time(src.created_at)],
      ['', (src) => h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'secondary', 'aria-label': `Rotate the ingest URL of ${src.name}`,
          onclick: async () => {
            if (!window.confirm(`Give ${src.name} a new ingest URL? The old one stops working.`)) return;
            try {
              showUrl(await api('POST', path('/v1/sources', src.name, 'rotate-token')));
              await load();
            } catch (err) {
              ctx.error(err);
            }
          } }, 'Rotate URL'),
        h('button', { type: 'button', class: 'danger', 'aria-label': `Delete source ${src.name}`,
          onclick: () => window.confirm(`Delete source ${src.name}?`) && act(() => api('DELETE', path('/v1/sources', src.name)), `Source ${src.name} deleted.`)() }, 'Delete'))],
    ], r.sources, { empty: 'No sources.' }));
  };
  const name = h('input', { name: 'source_name', required: true, maxlength: 128, placeholder: 'github-orders' });
  const station = h('input', { name: 'source_station', required: true, maxlength: 128, placeholder: 'orders' });
  const scheme = h('select', { name: 'scheme' }, h('option', { value: '' }, 'none'), SCHEMES.map((sc) => h('option', { value: sc }, sc)));
  const secret = h('input', { name: 'source_secret', type: 'password', autocomplete: 'off' });
  const header = h('input', { name: 'source_header', placeholder: 'for hmac_sha256' });
  const form = h('form', { class: 'stack', onsubmit: async (e) => {
    e.preventDefault();
    const body = { station: station.value };
    if (scheme.value) {
      body.verify = { scheme: scheme.value, secret: secret.value };
      if (header.value) body.verify.header = header.value;
    }
    try {
      showUrl(await api('PUT', path('/v1/sources', name.value), { json: body }));
      await load();
    } catch (err) {
      ctx.error(err);
    }
  } }, field('Source name', name), field('Station', station), field('Signature scheme', scheme),
  field('Signing secret', secret), field('Signature header', header), h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Save source')));
  replace(ctx.main, h('h1', {}, 'Sources'),
    h('p', { class: 'muted' }, 'Senders that cannot send a token (GitHub, Stripe, Shopify, …) post to a source\'s ingest URL; Depot checks their signature.'),
    urlBox, listBox, h('section', { class: 'card' }, h('h2', {}, 'New source'), form));
  await load();
}
