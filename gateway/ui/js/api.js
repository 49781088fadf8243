// The JSON API, with the session's Bearer token. Tokens live in sessionStorage: they last as long
// as the tab, are not shared with other tabs, and are gone when it closes (localStorage would keep
// a refresh token on disk indefinitely).

const KEY = 'depot.session';

export class ApiError extends Error {
  constructor(status, code, detail, title) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.detail = detail || title || `HTTP ${status}`;
  }
}

export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || 'null');
  } catch {
    return null;
  }
}

function store(tokens, who) {
  const previous = session();
  const value = {
    access: tokens.access_token,
    refresh: tokens.refresh_token,
    // Refresh 30 s early so a request never leaves with a token about to expire.
    refreshAt: Date.now() + Math.max(0, (tokens.expires_in - 30) * 1000),
    who: who || previous?.who || '',
  };
  sessionStorage.setItem(KEY, JSON.stringify(value));
  return value;
}

export function clearSession() {
  sessionStorage.removeItem(KEY);
}

/** The claims of the access token (role, kind, scopes), for showing what the API will allow. */
export function claims() {
  const s = session();
  if (!s) return null;
  try {
    const part = s.access.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
  } catch {
    return null;
  }
}

export function isAdmin() {
  return claims()?.role === 'admin';
}

async function problem(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  const retry = resp.headers.get('retry-after');
  let detail = body && typeof body.detail === 'string' ? body.detail : null;
  if (!detail && body && typeof body.reason === 'string') detail = body.reason;
  if (!detail) detail = `${resp.status} ${resp.statusText || 'error'}`;
  if (resp.status === 429 && retry) detail += ` (retry after ${retry} s)`;
  return new ApiError(resp.status, body?.code || null, detail, body?.title);
}

async function tokenCall(path, body) {
  const resp = await fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify(body),
    credentials: 'omit',
    cache: 'no-store',
  });
  if (!resp.ok) throw await problem(resp);
  return resp.json();
}

export async function signIn(credentials) {
  const tokens = await tokenCall('/v1/auth/token', credentials);
  const who = credentials.username || `API key ${credentials.api_key.slice(0, 7)}…`;
  return store(tokens, who);
}

let refreshing = null;

/** Trades the refresh token for a new pair, once even when several requests need it at once. */
function refresh() {
  if (!refreshing) {
    const s = session();
    refreshing = (async () => {
      if (!s?.refresh) throw new ApiError(401, 'unauthorized', 'Not signed in.');
      try {
        return store(await tokenCall('/v1/auth/refresh', { refresh_token: s.refresh }));
      } catch (e) {
        clearSession();
        window.dispatchEvent(new CustomEvent('depot:signed-out', { detail: e.detail || String(e) }));
        throw e;
      }
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

export async function signOut() {
  const s = session();
  clearSession();
  if (s?.refresh) {
    try {
      await fetch('/v1/auth/revoke', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ refresh_token: s.refresh }),
        credentials: 'omit',
      });
    } catch {
      // Signed out here either way; the refresh token expires on its own.
    }
  }
}

/**
 * Calls the API and answers the parsed JSON (null for 204). Errors are ApiError with the
 * problem+json `detail`. `json` is sent as JSON; `body` as it is with `contentType`.
 */
export async function api(method, path, { json, body, contentType, headers = {}, okStatuses = [] } = {}) {
  let s = session();
  if (!s) throw new ApiError(401, 'unauthorized', 'Not signed in.');
  if (Date.now() >= s.refreshAt) s = await refresh();
  const send = (token) => {
    const h = { Accept: 'application/json', Authorization: `Bearer ${token}`, ...headers };
    let payload = body;
    if (json !== undefined) {
      h['Content-Type'] = 'application/json';
      payload = JSON.stringify(json);
    } else if (body !== undefined && contentType) {
      h['Content-Type'] = contentType;
    }
    return fetch(path, { method, headers: h, body: payload, credentials: 'omit', cache: 'no-store' });
  };
  let resp = await send(s.access);
  if (resp.status === 401) {
    s = await refresh();
    resp = await send(s.access);
  }
  if (resp.status === 204) return null;
  if (!resp.ok && !okStatuses.includes(resp.status)) throw await problem(resp);
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

/** `/v1/stations/{a}/...` with each part encoded. */
export function path(...parts) {
  return parts.map((p, i) => (i === 0 ? p : encodeURIComponent(p))).join('/');
}
