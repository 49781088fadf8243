// Users (administrators only): list, create, delete.

import { api, path } from '../api.js';
import { h, replace, table, field } from '../dom.js';
import { time } from '../format.js';

export async function render(ctx) {
  const listBox = h('div', { id: 'users' });
  const load = async () => {
    const r = await api('GET', '/v1/users');
    if (!ctx.alive) return;
    replace(listBox, table([
      ['User', (u) => u.username],
      ['Role', (u) => h('span', { class: 'badge' }, u.role)],
      ['Created', (u) => time(u.created_at)],
      ['', (u) => h('button', { type: 'button', class: 'danger', 'aria-label': `Delete user ${u.username}`, onclick: async () => {
        if (!window.confirm(`Delete user ${u.username}? Their sessions and API keys stop working.`)) return;
        try {
          await api('DELETE', path('/v1/users', u.username));
          ctx.info(`User ${u.username} deleted.`);
          await load();
        } catch (err) {
          ctx.error(err);
        }
      } }, 'Delete')],
    ], r.users, { empty: 'No users.' }));
  };
  const username = h('input', { name: 'new_username', required: true, autocomplete: 'off' });
  const password = h('input', { name: 'new_password', type: 'password', required: true, autocomplete: 'new-password' });
  const role = h('select', { name: 'role' }, h('option', { value: 'member' }, 'member'), h('option', { value: 'admin' }, 'admin'));
  const form = h('form', { class: 'row', onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api('POST', '/v1/users', { json: { username: username.value, password: password.value, role: role.value } });
      ctx.info(`User ${username.value} created.`);
      username.value = '';
      password.value = '';
      await load();
    } catch (err) {
      ctx.error(err);
    }
  } }, field('Username', username), field('Password', password), field('Role', role), h('button', { type: 'submit' }, 'Create user'));
  replace(ctx.main, h('h1', {}, 'Users'), h('section', { class: 'card' }, h('h2', {}, 'New user'), form), listBox);
  await load();
}
