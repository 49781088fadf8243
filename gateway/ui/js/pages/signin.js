import { signIn, session } from '../api.js';
import { h, replace, field } from '../dom.js';

export async function render(ctx) {
  const { afterSignIn } = ctx;
  if (session()) {
    afterSignIn();
    return;
  }
  let mode = 'password';
  const username = h('input', { name: 'username', autocomplete: 'username', required: true });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const apiKey = h('input', { name: 'api_key', type: 'password', autocomplete: 'off', placeholder: 'dk_…', required: true });
  const fields = h('div', { class: 'stack' });
  const problem = h('p', { class: 'error', role: 'alert', id: 'signin-error' });
  const submit = h('button', { type: 'submit' }, 'Sign in');
  const tabs = h('div', { class: 'tabs', role: 'group', 'aria-label': 'Sign in with' });
  const draw = () => {
    replace(fields, mode === 'password'
      ? [field('Username', username), field('Password', password)]
      : [field('API key', apiKey)]);
    replace(tabs,
      h('button', { type: 'button', 'aria-pressed': String(mode === 'password'), onclick: () => { mode = 'password'; draw(); username.focus(); } }, 'Username and password'),
      h('button', { type: 'button', 'aria-pressed': String(mode === 'key'), onclick: () => { mode = 'key'; draw(); apiKey.focus(); } }, 'API key'));
  };
  draw();
  const form = h('form', { class: 'stack', onsubmit: async (e) => {
    e.preventDefault();
    problem.textContent = '';
    submit.disabled = true;
    try {
      await signIn(mode === 'password' ? { username: username.value, password: password.value } : { api_key: apiKey.value.trim() });
      afterSignIn();
    } catch (err) {
      problem.textContent = err.detail || String(err);
    } finally {
      submit.disabled = false;
    }
  } }, tabs, fields, submit, problem);
  replace(ctx.main, h('section', { class: 'card signin' },
    h('h1', {}, 'Sign in to Depot'),
    form,
    h('p', { class: 'muted' }, 'The session is kept in this tab only (sessionStorage) and ends when the tab closes.')));
  (mode === 'password' ? username : apiKey).focus();
}
