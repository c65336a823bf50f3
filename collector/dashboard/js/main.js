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
/** How often live views refresh when the session does not say (`[dashboard] refresh`). */
const REFRESH_MS = 30000;
/** How soon a refresh put off by the person's input (a drag, a composition, an open list) is tried again. */
const RETRY_MS = 1000;

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const signoutButton = document.getElementById('signout');

let renders = 0;
/** The hash of the view shown (a refresh keeps the place only on the same view). */
let shownHash = null;
/** Renders under way, their later parts (a chart) included: a refresh waits for them. */
let rendering = 0;
/** A pointer is down (a drag on the timeline) or an input method is composing text. */
let pointerDown = false;
let composing = false;

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

/**
 * Where an element is in `root`: `#id`, or the indexes of its ancestors'
 * children from `root` down (the same place in a view built again from the
 * same state).
 */
function keyOf(el, root) {
  if (el.id) return `#${el.id}`;
  const path = [];
  for (let n = el; n && n !== root; n = n.parentElement) {
    path.unshift([...n.parentElement.children].indexOf(n));
  }
  return path.join('/');
}

function byKey(key, root) {
  if (key.startsWith('#')) {
    const el = document.getElementById(key.slice(1));
    return el && root.contains(el) ? el : null;
  }
  let n = root;
  for (const i of key.split('/')) n = n ? n.children[Number(i)] : null;
  return n || null;
}

/** Whether a form field holds something other than what the view put in it (typed, not yet sent). */
function edited(el) {
  if (el.tagName === 'SELECT') return [...el.options].some((o) => o.selected !== o.defaultSelected);
  if (el.type === 'checkbox' || el.type === 'radio') return el.checked !== el.defaultChecked;
  return el.value !== el.defaultValue;
}

/**
 * The person's place on the view shown, which a refresh keeps: the page's
 * and every inner box's scroll, what is typed in the forms and not sent yet,
 * which sections are open, and the focus with its caret.
 */
function place() {
  const active = document.activeElement;
  const p = {
    x: window.scrollX, y: window.scrollY, height: main.firstElementChild ? main.firstElementChild.offsetHeight : 0,
    scrolled: [], fields: [], open: [], focus: null,
  };
  for (const el of main.querySelectorAll('*')) {
    if (el.scrollLeft || el.scrollTop) p.scrolled.push([keyOf(el, main), el.scrollLeft, el.scrollTop]);
  }
  for (const el of main.querySelectorAll('input, select, textarea')) {
    if (el.type !== 'password' && el.type !== 'file' && edited(el)) {
      p.fields.push([keyOf(el, main), el.tagName, el.type === 'checkbox' || el.type === 'radio' ? el.checked : el.value]);
    }
  }
  for (const el of main.querySelectorAll('details')) p.open.push([keyOf(el, main), el.open]);
  if (active && active !== main && main.contains(active)) {
    p.focus = { key: keyOf(active, main), tag: active.tagName, href: active.getAttribute('href') };
    try {
      p.focus.selection = [active.selectionStart, active.selectionEnd, active.selectionDirection];
    } catch (e) {
      // Not a text field: no caret to keep.
    }
  }
  return p;
}

function restoreScrolls(p) {
  for (const [key, left, top] of p.scrolled) {
    const el = byKey(key, main);
    if (el) {
      el.scrollLeft = left;
      el.scrollTop = top;
    }
  }
}

function restore(p) {
  for (const [key, tag, value] of p.fields) {
    const el = byKey(key, main);
    if (!el || el.tagName !== tag) continue;
    if (el.type === 'checkbox' || el.type === 'radio') el.checked = value;
    else el.value = value;
  }
  for (const [key, open] of p.open) {
    const el = byKey(key, main);
    if (el && el.tagName === 'DETAILS') el.open = open;
  }
  if (p.focus) {
    let el = byKey(p.focus.key, main);
    // A link without an id: the one to the same place, if the rows moved.
    if (p.focus.href !== null && (!el || el.getAttribute('href') !== p.focus.href)) {
      el = [...main.querySelectorAll('a[href]')].find((a) => a.getAttribute('href') === p.focus.href) || el;
    }
    if (el && el.tagName === p.focus.tag) {
      el.focus({ preventScroll: true });
      if (p.focus.selection && p.focus.selection[0] !== null) {
        try {
          el.setSelectionRange(...p.focus.selection);
        } catch (e) {
          // The field no longer takes a caret.
        }
      }
    }
  }
  window.scrollTo(p.x, p.y);
  restoreScrolls(p);
}

function asOf(now, failure) {
  const at = h('time', { datetime: now.toISOString() }, local(now));
  return h('p', { class: 'asof', id: 'asof' }, failure
    ? [h('span', { class: 'refresh-failed', role: 'status' }, `Refresh failed (${failure}); `), 'showing the view as of ', at]
    : ['as of ', at]);
}

async function render(options) {
  rendering += 1;
  try {
    await draw(options);
  } finally {
    rendering -= 1;
  }
}

async function draw({ refresh = false } = {}) {
  const mine = ++renders;
  // A view just opened waits a whole period for its first refresh.
  if (!refresh) schedule();
  const session = api.current();
  showSession(session);
  if (!session) {
    shownHash = null;
    signin.render(main, { done: () => render() });
    return;
  }
  const r = route();
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.view === r.view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const box = h('div', { class: 'view', 'data-view': r.view });
  // Parts a view draws after its first render (a chart), awaited before the refresh is done.
  const later = [];
  const ctx = {
    ...r, session, href, go, live: () => mine === renders, later: (promise) => later.push(promise),
  };
  const hash = location.hash;
  let failure = null;
  try {
    await VIEWS[r.view].render(box, ctx);
  } catch (e) {
    if (e instanceof api.SignedOut) {
      shownHash = null;
      showSession(null);
      signin.render(main, { done: () => render(), message: e.message });
      return;
    }
    failure = e.message || String(e);
  }
  if (mine !== renders) return;
  const keep = refresh && shownHash === hash;
  if (keep && failure !== null) {
    // The collector did not answer: the view stays as it was, and says so.
    const old = document.getElementById('asof');
    const shown = old && old.querySelector('time');
    if (old) old.replaceWith(asOf(shown ? new Date(shown.dateTime) : new Date(), failure));
    return;
  }
  if (failure !== null) put(box, note(failure, 'error'));
  // Taken right before the swap, in the same task: nothing typed meanwhile is lost.
  const p = keep ? place() : null;
  // As tall as the view it replaces until its later parts are drawn, so the page's scroll is not cut short.
  if (p) box.style.minHeight = `${p.height}px`;
  put(main, box, asOf(new Date()));
  shownHash = hash;
  if (p) restore(p);
  else main.focus({ preventScroll: true });
  await Promise.allSettled(later);
  if (p && mine === renders) {
    box.style.minHeight = '';
    restoreScrolls(p);
  }
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

document.addEventListener('pointerdown', () => { pointerDown = true; }, true);
for (const type of ['pointerup', 'pointercancel']) document.addEventListener(type, () => { pointerDown = false; }, true);
document.addEventListener('compositionstart', () => { composing = true; }, true);
document.addEventListener('compositionend', () => { composing = false; }, true);

let timer = null;

/** (Re)starts the wait for the next refresh. */
function schedule(ms) {
  clearTimeout(timer);
  const s = api.current();
  timer = setTimeout(tick, ms || (s && s.refresh_seconds ? s.refresh_seconds * 1000 : REFRESH_MS));
}

// Live views (no "as it was at" time) refresh by themselves while the tab is
// visible, keeping the person's place; not in the middle of a drag, a
// composition or an open drop-down list, which a rebuilt view would end.
async function tick() {
  const r = route();
  if (!api.current() || document.visibilityState !== 'visible' || r.params.get('at')) {
    schedule();
    return;
  }
  const active = document.activeElement;
  // A view still loading (a fleet-wide chart may take long on a big fleet) is not asked again on top.
  if (rendering || pointerDown || composing || (active && active.tagName === 'SELECT' && main.contains(active))) {
    schedule(RETRY_MS);
    return;
  }
  try {
    await render({ refresh: true });
  } finally {
    schedule();
  }
}

(async () => {
  try {
    await api.loadSession();
  } catch (e) {
    put(main, note(`The collector did not answer: ${e.message}`, 'error'));
    return;
  }
  render();
})();
