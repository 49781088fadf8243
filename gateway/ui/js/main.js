// The dashboard's shell: a router over the URL fragment (#/stations/orders), the navigation, the
// alert line, and a context per page whose timers stop when the page is left.

import { session, signOut, isAdmin, ApiError } from './api.js';
import { h, replace } from './dom.js';
import * as signin from './pages/signin.js';
import * as overview from './pages/overview.js';
import * as station from './pages/station.js';
import * as groups from './pages/groups.js';
import * as deadLetters from './pages/dead_letters.js';
import * as keys from './pages/keys.js';
import * as users from './pages/users.js';
import * as cluster from './pages/cluster.js';
import * as push from './pages/push.js';
import * as hooks from './pages/hooks.js';
import * as sources from './pages/sources.js';
import * as tiering from './pages/tiering.js';

const ROUTES = [
  [/^\/signin$/, signin, 'signin'],
  [/^\/?$/, overview, 'overview'],
  [/^\/stations\/([^/]+)$/, station, 'overview'],
  [/^\/stations\/([^/]+)\/groups\/([^/]+)$/, groups, 'overview'],
  [/^\/stations\/([^/]+)\/dead-letters$/, deadLetters, 'overview'],
  [/^\/keys$/, keys, 'keys'],
  [/^\/users$/, users, 'users'],
  [/^\/cluster$/, cluster, 'cluster'],
  [/^\/push$/, push, 'push'],
  [/^\/hooks$/, hooks, 'hooks'],
  [/^\/sources$/, sources, 'sources'],
  [/^\/tiering$/, tiering, 'tiering'],
];

const main = document.getElementById('main');
const alertBox = document.getElementById('alert');
let current = null;

function showAlert(text, kind = 'error') {
  alertBox.textContent = text;
  alertBox.className = kind === 'info' ? 'alert info' : 'alert';
  alertBox.hidden = !text;
}

/** What a page gets: where to draw, timers that die with the page, and the alert line. */
function context() {
  const timers = [];
  const ctx = {
    main,
    alive: true,
    every(ms, fn) {
      let running = false;
      let failed = false;
      const tick = async () => {
        if (!ctx.alive || running) return;
        running = true;
        try {
          await fn();
          // A poll that failed (node restarting, leader election) and works again clears its alert.
          if (failed && ctx.alive) showAlert('');
          failed = false;
        } catch (e) {
          failed = true;
          ctx.error(e);
        } finally {
          running = false;
        }
      };
      timers.push(setInterval(tick, ms));
      return tick;
    },
    error(e) {
      if (!ctx.alive) return;
      if (e instanceof ApiError && e.status === 401) return; // the sign-in page takes over
      showAlert(e instanceof ApiError ? e.detail : String(e?.message || e));
    },
    info(text) {
      if (ctx.alive) showAlert(text, 'info');
    },
    clearAlert() {
      if (ctx.alive) showAlert('');
    },
    afterSignIn,
    stop() {
      ctx.alive = false;
      timers.forEach(clearInterval);
    },
  };
  return ctx;
}

function updateChrome(active) {
  const s = session();
  document.getElementById('nav').hidden = !s;
  document.getElementById('who').hidden = !s;
  document.getElementById('who-name').textContent = s ? s.who : '';
  for (const li of document.querySelectorAll('[data-admin]')) li.hidden = !isAdmin();
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === active) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function route() {
  let hash;
  try {
    hash = decodeURIComponent(location.hash.replace(/^#/, '')) || '/';
  } catch {
    hash = '/not-found';
  }
  if (!session() && hash !== '/signin') {
    sessionStorage.setItem('depot.after', hash);
    location.replace('#/signin');
    return;
  }
  current?.stop();
  showAlert('');
  const ctx = context();
  current = ctx;
  const found = ROUTES.map(([re, page, nav]) => [hash.match(re), page, nav]).find(([m]) => m);
  if (!found) {
    updateChrome(null);
    replace(main, h('h1', {}, 'Not found'), h('p', {}, 'No page here. ', h('a', { href: '#/' }, 'Back to the stations')));
    return;
  }
  const [match, page, nav] = found;
  updateChrome(nav);
  replace(main, h('p', { class: 'muted' }, 'Loading…'));
  try {
    await page.render(ctx, ...match.slice(1));
  } catch (e) {
    if (e instanceof ApiError && e.status === 403 && ctx.alive) {
      // Scoped credentials: say what the API refused instead of a broken page.
      replace(main, h('h1', {}, 'Not allowed'), h('p', { class: 'notice' }, e.detail),
        h('p', {}, h('a', { href: '#/' }, 'Back to the stations')));
    } else if (e instanceof ApiError && e.status === 404 && ctx.alive) {
      replace(main, h('h1', {}, 'Not found'), h('p', { class: 'notice' }, e.detail),
        h('p', {}, h('a', { href: '#/' }, 'Back to the stations')));
    } else {
      ctx.error(e);
    }
  }
  if (document.activeElement === document.body) main.focus({ preventScroll: true });
}

window.addEventListener('hashchange', route);
window.addEventListener('depot:signed-out', (e) => {
  current?.stop();
  location.hash = '#/signin';
  showAlert(`Signed out: ${e.detail}`);
});
document.getElementById('sign-out').addEventListener('click', async () => {
  await signOut();
  location.hash = '#/signin';
  updateChrome(null);
});

function afterSignIn() {
  const after = sessionStorage.getItem('depot.after');
  sessionStorage.removeItem('depot.after');
  location.hash = `#${after && after !== '/signin' ? after : '/'}`;
}

route();
