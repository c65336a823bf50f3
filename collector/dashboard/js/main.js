// The dashboard's entry: the session, the hash router, the refresh.
// Every view's state is in the URL's hash (#/host/web-3?at=...), so a link
// to an incident can be pasted into a chat; views read only /api/v1.

import * as api from './api.js';
import { h, put, note } from './dom.js';
import { local } from './time.js';
import * as signin from './views/signin.js';
import * as fleet from './views/fleet.js';
import * as host from './views/host.js';
import * as port from './views/port.js';
import * as alerts from './views/alerts.js';
import * as drift from './views/drift.js';
import * as trends from './views/trends.js';

const VIEWS = { fleet, host, port, alerts, drift, trends };
const REFRESH_MS = 30000;

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const signoutButton = document.getElementById('signout');

let renders = 0;

/** The view, its path segments and its parameters, from the hash. */
export function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [path, search] = hash.split('?', 2);
  const segs = path.split('/').filter((x) => x !== '').map(decodeURIComponent);
  const view = VIEWS[segs[0]] ? segs[0] : 'fleet';
  return { view, segs: segs.slice(1), params: new URLSearchParams(search || '') };
}

/** The hash of a view's state (empty parameters left out). */
export function href(view, segs = [], params = {}) {
  const path = [view, ...segs.map((x) => encodeURIComponent(String(x)))].join('/');
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== '') q.set(k, String(v));
  }
  const text = q.toString();
  return `#/${path}${text ? `?${text}` : ''}`;
}

/** Goes to a view's state (the hash changes; the view renders). */
export function go(view, segs, params) {
  const next = href(view, segs, params);
  if (location.hash === next) render();
  else location.hash = next;
}

function showSession(session) {
  nav.hidden = !session;
  signoutButton.hidden = !session;
  put(who, session ? `${session.name} (${session.role})` : '');
}

async function render({ refresh = false } = {}) {
  const mine = ++renders;
  const session = api.current();
  showSession(session);
  if (!session) {
    signin.render(main, { done: () => render() });
    return;
  }
  const r = route();
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.view === r.view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const box = h('div', { class: 'view', 'data-view': r.view });
  const ctx = { ...r, session, href, go, live: () => mine === renders };
  const scroll = window.scrollY;
  try {
    await VIEWS[r.view].render(box, ctx);
  } catch (e) {
    if (e instanceof api.SignedOut) {
      showSession(null);
      signin.render(main, { done: () => render(), message: e.message });
      return;
    }
    put(box, note(e.message || String(e), 'error'));
  }
  if (mine !== renders) return;
  put(main, box, h('p', { class: 'asof', id: 'asof' }, `as of ${local(new Date())}`));
  if (refresh) window.scrollTo(0, scroll);
  else main.focus({ preventScroll: true });
}

signoutButton.addEventListener('click', async () => {
  try {
    await api.signOut();
  } catch (e) {
    // Signed out on the page either way; the collector's sessions end by themselves.
  }
  showSession(null);
  signin.render(main, { done: () => render(), message: 'Signed out.' });
});

window.addEventListener('hashchange', () => render());

// Live views (no "as it was at" time) refresh by themselves, unless the
// person is typing in a form or the tab is hidden.
setInterval(() => {
  const r = route();
  const typing = document.activeElement && main.contains(document.activeElement)
    && ['INPUT', 'SELECT', 'TEXTAREA'].includes(document.activeElement.tagName);
  if (api.current() && !typing && document.visibilityState === 'visible' && !r.params.get('at')) {
    render({ refresh: true });
  }
}, REFRESH_MS);

(async () => {
  try {
    await api.loadSession();
  } catch (e) {
    put(main, note(`The collector did not answer: ${e.message}`, 'error'));
    return;
  }
  render();
})();
