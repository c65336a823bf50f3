// The dashboard's only way to the collector: the public /api/v1, with the
// session cookie (HttpOnly: this code never sees it). Changes carry the
// session's CSRF token, which lives in this module's memory only.

let session = null;

/** Thrown when the collector says the session is gone (401). */
export class SignedOut extends Error {}

/** Thrown for any other refusal; `status` and the collector's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function answer(response) {
  const type = response.headers.get('content-type') || '';
  const body = type.startsWith('application/json') ? await response.json() : await response.text();
  if (response.status === 401) {
    session = null;
    throw new SignedOut(body && body.error ? body.error : 'signed out');
  }
  if (!response.ok) {
    throw new ApiError(response.status, body && body.error ? body.error : `HTTP ${response.status}`);
  }
  return { body, headers: response.headers };
}

/** The query string of `params`, leaving out empty values. */
export function query(params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== '') q.set(k, String(v));
  }
  const text = q.toString();
  return text ? `?${text}` : '';
}

/** GET `path` with `params`: the parsed body. */
export async function get(path, params) {
  const { body } = await getWithHeaders(path, params);
  return body;
}

/** GET `path` with `params`: the body and the answer's headers. */
export async function getWithHeaders(path, params) {
  const response = await fetch(`/api/v1${path}${query(params)}`, {
    credentials: 'same-origin',
    headers: { Accept: 'application/json' },
    cache: 'no-store',
  });
  return answer(response);
}

/** A change (POST, DELETE): JSON body, the session's CSRF token. */
export async function change(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (session) headers['X-CSRF-Token'] = session.csrf_token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(`/api/v1${path}`, {
    method,
    credentials: 'same-origin',
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  return (await answer(response)).body;
}

/** The current session, asked of the collector (null: not signed in). */
export async function loadSession() {
  try {
    session = await get('/session');
  } catch (e) {
    if (e instanceof SignedOut) return null;
    throw e;
  }
  return session;
}

/** Signs in with a pasted token; the token goes in the body and is not kept. */
export async function signIn(token) {
  const response = await fetch('/api/v1/session', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ token }),
    cache: 'no-store',
  });
  try {
    session = (await answer(response)).body;
  } catch (e) {
    // A refused token is a message for the sign-in form, not a sign-out.
    if (e instanceof SignedOut) throw new ApiError(401, e.message);
    throw e;
  }
  return session;
}

/** Ends the session on the collector. */
export async function signOut() {
  try {
    await change('DELETE', '/session');
  } finally {
    session = null;
  }
}

/** The session known to this page (null before sign-in). */
export function current() {
  return session;
}
