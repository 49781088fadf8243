// A consumer group's push settings as form fields (API.md "Push delivery"): URL, signing secret,
// extra headers, timeout per attempt, attempts in flight and attempts per second. The browser
// checks the number ranges; the API checks the rest (a malformed secret, a reserved header, a
// private address, a timeout not under the group's ack wait) and the page shows its detail.

import { h, field } from './dom.js';
import { headerLines } from './format.js';

/**
 * The fields, filled from `current` (a group's `config.push`, or nothing for a new group).
 * `url` is its own field, for forms that show it apart; `settings` are the others; `read()`
 * answers the `push` object of a PUT (null when the URL is empty) and throws on a malformed
 * header line.
 */
export function pushFields(current = null) {
  const url = h('input', { name: 'push_url', type: 'url', value: current?.url || '', placeholder: 'webhook URL; empty for a pull group' });
  const secret = h('input', { name: 'push_secret', type: 'password', autocomplete: 'off',
    placeholder: current ? 'empty: keep the current one' : 'whsec_… (empty: one is made)' });
  const headerText = Object.entries(current?.headers || {}).map(([k, v]) => `${k}: ${v}`).join('\n');
  const headers = h('textarea', { name: 'push_headers', rows: 2, value: headerText, placeholder: 'authorization: Bearer …' });
  const number = (name, min, max, value, placeholder) =>
    h('input', { name, type: 'number', min, max, step: 1, inputmode: 'numeric', value: value ?? '', placeholder });
  const timeout = number('push_timeout_ms', 1000, 60000, current?.timeout_ms, '15000');
  const inFlight = number('push_max_in_flight', 1, 1000, current?.max_in_flight, '16');
  const rate = number('push_rate_per_s', 1, undefined, current?.rate_per_s, 'no limit');
  return {
    url,
    settings: [
      field('Signing secret (optional)', secret),
      field('Extra headers ("name: value" per line)', headers),
      field('Timeout per attempt (ms, 1000-60000)', timeout),
      field('Attempts in flight at most (1-1000)', inFlight),
      field('Attempts per second at most (empty: no limit)', rate),
    ],
    read() {
      if (!url.value.trim()) return null;
      const push = { url: url.value.trim() };
      if (secret.value) push.secret = secret.value;
      const extra = headerLines(headers.value);
      if (Object.keys(extra).length) push.headers = extra;
      for (const [key, input] of [['timeout_ms', timeout], ['max_in_flight', inFlight], ['rate_per_s', rate]]) {
        if (input.value !== '') push[key] = Number(input.value);
      }
      return push;
    },
    /** The secret is sent once; emptied after a save so a later save keeps it. */
    forgetSecret() {
      secret.value = '';
    },
  };
}
