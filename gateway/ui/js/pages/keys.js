// API keys: list, create (the key is shown once, with snippets to use it), revoke.

import { api, path } from '../api.js';
import { h, replace, table, field } from '../dom.js';
import { time } from '../format.js';

const ACTIONS = ['produce', 'consume', 'manage'];

/** Copy-paste examples that produce one message with the new key. */
export function snippets(origin, key, station) {
  const url = `${origin}/v1/stations/${station}/messages`;
  return {
    curl: `curl -X POST '${url}' \\\n  -H 'Authorization: Bearer ${key}' \\\n  -H 'Content-Type: application/json' \\\n  -d '{"hello": "depot"}'`,
    Python: `import json, urllib.request\n\nreq = urllib.request.Request(\n    "${url}",\n    data=json.dumps({"hello": "depot"}).encode(),\n    headers={"Authorization": "Bearer ${key}", "Content-Type": "application/json"},\n    method="POST",\n)\nprint(urllib.request.urlopen(req).read().decode())`,
    JavaScript: `const resp = await fetch("${url}", {\n  method: "POST",\n  headers: { Authorization: "Bearer ${key}", "Content-Type": "application/json" },\n  body: JSON.stringify({ hello: "depot" }),\n});\nconsole.log(resp.status, await resp.json());`,
    Go: `package main\n\nimport (\n\t"fmt"\n\t"io"\n\t"net/http"\n\t"strings"\n)\n\nfunc main() {\n\treq, _ := http.NewRequest("POST", "${url}", strings.NewReader(\`{"hello": "depot"}\`))\n\treq.Header.Set("Authorization", "Bearer ${key}")\n\treq.Header.Set("Content-Type", "application/json")\n\tresp, err := http.DefaultClient.Do(req)\n\tif err != nil {\n\t\tpanic(err)\n\t}\n\tdefer resp.Body.Close()\n\tbody, _ := io.ReadAll(resp.Body)\n\tfmt.Println(resp.Status, string(body))\n}`,
  };
}

function copyButton(text, what) {
  const b = h('button', { type: 'button', class: 'secondary', onclick: async () => {
    try {
      await navigator.clipboard.writeText(text);
      b.textContent = 'Copied';
    } catch {
      b.textContent = 'Select and copy by hand';
    }
  } }, `Copy ${what}`);
  return b;
}

function createdView(created) {
  const pattern = created.scopes[0]?.stations || 'orders';
  const station = pattern.includes('*') ? (pattern.replace(/\*/g, '') || 'orders') : pattern;
  const code = snippets(location.origin, created.key, station);
  let lang = 'curl';
  const pre = h('pre', { id: 'snippet' });
  const tabs = h('div', { class: 'tabs', role: 'group', 'aria-label': 'Snippet language' });
  const copy = h('span');
  const draw = () => {
    pre.textContent = code[lang];
    replace(tabs, Object.keys(code).map((l) => h('button', { type: 'button', 'aria-pressed': String(l === lang), onclick: () => { lang = l; draw(); } }, l)));
    replace(copy, copyButton(code[lang], lang));
  };
  draw();
  return h('section', { class: 'secret', id: 'created-key' },
    h('h2', {}, `Key ${created.name} created`),
    h('p', {}, h('strong', {}, 'Copy it now: it is shown only this once.'), ' Depot stores only a digest of it.'),
    h('pre', { class: 'mono', id: 'new-key' }, created.key),
    copyButton(created.key, 'key'),
    h('h3', {}, 'Use it'), tabs, pre, copy);
}

export async function render(ctx) {
  const listBox = h('div', { id: 'keys' });
  const createdBox = h('div');
  const load = async () => {
    const r = await api('GET', '/v1/api-keys');
    if (!ctx.alive) return;
    replace(listBox, table([
      ['Name', (k) => k.name],
      ['Id', (k) => h('code', {}, k.id)],
      ['Owner', (k) => k.owner],
      ['Scopes', (k) => k.scopes.map((sc) => `${sc.stations}: ${sc.actions.join(', ')}`).join('; ')],
      ['Created', (k) => time(k.created_at)],
      ['Expires', (k) => (k.expires_at ? time(k.expires_at) : 'never')],
      ['', (k) => h('button', { type: 'button', class: 'danger', 'aria-label': `Revoke key ${k.name}`, onclick: async () => {
        if (!window.confirm(`Revoke key ${k.name}? It stops working at once.`)) return;
        try {
          await api('DELETE', path('/v1/api-keys', k.id));
          ctx.info(`Key ${k.name} revoked.`);
          await load();
        } catch (err) {
          ctx.error(err);
        }
      } }, 'Revoke')],
    ], r.api_keys, { empty: 'No API keys.' }));
  };
  const name = h('input', { name: 'key_name', required: true, maxlength: 128, placeholder: 'orders-producer' });
  const stations = h('input', { name: 'key_stations', required: true, value: '*', pattern: '[a-z0-9._*\\-]{1,128}' });
  const checks = ACTIONS.map((a) => h('input', { type: 'checkbox', name: `action_${a}`, value: a, checked: a !== 'manage' }));
  const expires = h('input', { name: 'key_expires', type: 'datetime-local' });
  const form = h('form', { class: 'stack', onsubmit: async (e) => {
    e.preventDefault();
    const actions = checks.filter((c) => c.checked).map((c) => c.value);
    if (!actions.length) {
      ctx.error(new Error('Choose at least one action.'));
      return;
    }
    const body = { name: name.value, scopes: [{ stations: stations.value, actions }] };
    if (expires.value) body.expires_at = new Date(expires.value).toISOString();
    try {
      const created = await api('POST', '/v1/api-keys', { json: body });
      replace(createdBox, createdView(created));
      name.value = '';
      await load();
      createdBox.querySelector('#new-key')?.scrollIntoView();
    } catch (err) {
      ctx.error(err);
    }
  } },
  field('Name', name), field('Stations (a name or a pattern such as orders*)', stations),
  h('fieldset', {}, h('legend', {}, 'Actions'), checks.map((c) => h('label', { class: 'inline' }, c, c.value))),
  field('Expires (optional, your local time)', expires),
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Create key')));
  replace(ctx.main, h('h1', {}, 'API keys'), createdBox, h('section', { class: 'card' }, h('h2', {}, 'New key'), form),
    h('h2', {}, 'Keys'), listBox);
  await load();
}
