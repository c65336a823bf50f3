// Host: the listeners at a moment (now, or as it was at any time), a
// timeline of every listener's intervals over a window, and the diff
// between two moments. State: #/host/NAME?at=&since=&until=&from=&to=

import * as api from '../api.js';
import { h, put, table, note, exportLinks } from '../dom.js';
import { local, parse } from '../time.js';
import { timeline } from '../timeline.js';

const DAY = 864e5;

/** `tcp 0.0.0.0:22`, `tcp6 [::]:80`. */
export function address(r) {
  const proto = r.dual_stack ? `${r.proto}46` : r.family === 'ipv6' ? `${r.proto}6` : r.proto;
  const addr = r.local_addr.includes(':') ? `[${r.local_addr}]` : r.local_addr;
  return `${proto} ${addr}:${r.local_port}`;
}

/** The processes holding a listener: name[pid], user, unit, container; the command line as text. */
export function processes(r) {
  if (!r.processes || r.processes.length === 0) return h('span', { class: 'muted' }, 'no holder visible');
  return h('ul', { class: 'procs' }, r.processes.map((p) => h('li', { class: 'proc', 'data-pid': p.pid },
    h('span', { class: 'pname' }, p.name), h('span', { class: 'pid' }, `[${p.pid}]`),
    p.user ? h('span', { class: 'puser' }, ` ${p.user}`) : null,
    p.unit ? h('span', { class: 'unit' }, ` (${p.unit})`) : null,
    p.container ? h('span', { class: 'container' }, ` (container ${p.container.slice(0, 12)})`) : null,
    p.cmdline ? h('code', { class: 'cmdline' }, p.cmdline) : null)));
}

/** The owner of an interval, as one line of text. */
function owners(r) {
  return (r.processes || []).map((p) => `${p.name}[${p.pid}]${p.user ? ` ${p.user}` : ''}`).join(', ') || 'no holder visible';
}

function listenerKey(r) {
  return `${r.netns}/${r.proto}/${r.local_addr}/${r.local_port}`;
}

/** What the host's firewall does with new connections to it: the answer, the deciding rule on hover. */
function firewall(r) {
  const fw = r.firewall;
  if (!fw) return h('span', { class: 'fw none', title: 'not evaluated (loopback, or the agent does not read the firewall)' }, '-');
  const sources = fw.sources && fw.sources.length ? ` (from ${fw.sources.join(', ')})` : '';
  return h('span', { class: `fw ${fw.reach}`, title: `${fw.rule}${sources}` }, fw.reach);
}

function listenersTable(rows, id) {
  const columns = [
    { title: 'Listener', cell: (r) => address(r) },
    { title: 'Port', class: 'num', cell: (r) => String(r.local_port) },
    { title: 'Exposure', cell: (r) => h('span', { class: `exp ${r.exposure}` }, r.exposure) },
    { title: 'Firewall', cell: firewall },
    { title: 'User', cell: (r) => r.user || '-' },
    { title: 'Processes', cell: processes },
    { title: 'Since', cell: (r) => local(r.opened_at) },
  ];
  const sorted = [...rows].sort((a, b) => a.local_port - b.local_port || a.proto.localeCompare(b.proto));
  return table(columns, sorted, { id, class: 'listeners' }, (r) => ({ dataset: { port: r.local_port, proto: r.proto } }));
}

function timeField(id, label, value, help) {
  return h('label', { for: id }, label, ' ',
    h('input', { id, name: id, value: value ? local(value) : '', placeholder: help, size: 20 }));
}

function diffSection(d) {
  const list = (title, rows, id) => h('section', { id },
    h('h3', {}, `${title} (${rows.length})`),
    rows.length ? listenersTable(rows, `${id}-table`) : note('None.'));
  return h('div', { class: 'diff' },
    list('Opened', d.opened, 'diff-opened'),
    list('Closed', d.closed, 'diff-closed'),
    h('section', { id: 'diff-changed' }, h('h3', {}, `Changed owner or firewall (${d.changed.length})`),
      d.changed.length ? table([
        { title: 'Listener', cell: (c) => address(c.after) },
        { title: 'Before', cell: (c) => [processes(c.before), firewall(c.before)] },
        { title: 'After', cell: (c) => [processes(c.after), firewall(c.after)] },
      ], d.changed) : note('None.')));
}

export async function render(box, ctx) {
  const name = ctx.segs[0];
  if (!name) {
    put(box, note('Pick a host on the Fleet view.'));
    return;
  }
  const p = ctx.params;
  const at = p.get('at');
  const atMs = at ? new Date(at).getTime() : Date.now();
  const until = p.get('until') || (at && atMs + DAY / 24 < Date.now() ? new Date(atMs + DAY / 24).toISOString() : null);
  const untilMs = until ? new Date(until).getTime() : Date.now();
  const since = p.get('since') || new Date(untilMs - DAY).toISOString();
  const from = p.get('from');
  const to = p.get('to');
  const [hosts, now, history, diff] = await Promise.all([
    api.get('/hosts'),
    api.get(`/hosts/${encodeURIComponent(name)}/listeners`, { at }),
    api.getWithHeaders(`/hosts/${encodeURIComponent(name)}/history`, { since, until, limit: 10000 }),
    from ? api.get(`/hosts/${encodeURIComponent(name)}/diff`, { from, to }) : Promise.resolve(null),
  ]);
  const info = hosts.find((x) => x.host === name);
  const state = (changes) => {
    const next = { at, since: p.get('since'), until: p.get('until'), from, to, ...changes };
    ctx.go('host', [name], next);
  };

  const error = h('div', { 'aria-live': 'polite' });
  const guard = (f) => (event) => {
    event.preventDefault();
    try {
      f();
    } catch (e) {
      put(error, note(e.message, 'error'));
    }
  };
  const atForm = h('form', { id: 'at-form', class: 'filters' },
    timeField('at', 'As it was at', at, 'now, -2h, 2026-11-25 03:00'),
    h('button', { type: 'submit', id: 'at-show' }, 'Show'),
    h('button', { type: 'button', id: 'at-now' }, 'Now'));
  atForm.addEventListener('submit', guard(() => state({ at: parse(atForm.elements.at.value) })));
  atForm.querySelector('#at-now').addEventListener('click', () => state({ at: null, since: null, until: null }));

  const windowForm = h('form', { id: 'window-form', class: 'filters' },
    timeField('since', 'From', since, '-24h'), timeField('until', 'to', until, 'now'),
    h('button', { type: 'submit' }, 'Show window'));
  windowForm.addEventListener('submit', guard(() => state({
    since: parse(windowForm.elements.since.value), until: parse(windowForm.elements.until.value),
  })));

  const diffForm = h('form', { id: 'diff-form', class: 'filters' },
    timeField('from', 'Compare', from, '-1h'), timeField('to', 'with', to, 'now'),
    h('button', { type: 'submit', id: 'diff-show' }, 'Compare'));
  diffForm.addEventListener('submit', guard(() => state({
    from: parse(diffForm.elements.from.value) || new Date().toISOString(), to: parse(diffForm.elements.to.value),
  })));

  const more = history.headers.get('link') ? note('The window holds more than 10,000 intervals: the first 10,000 are shown; narrow it.') : null;
  const tl = timeline(history.body, {
    since: new Date(since).getTime(), until: untilMs, key: listenerKey, label: address,
    tip: (r) => `${address(r)}\n${owners(r)}\nopened ${local(r.opened_at)}\n${r.closed_at ? `closed ${local(r.closed_at)}` : 'still open'}`,
    marks: at ? [atMs] : [],
    onPick: (ms) => state({ at: new Date(ms).toISOString() }),
    onZoom: (a, b) => state({ since: new Date(a).toISOString(), until: new Date(b).toISOString() }),
  });

  put(box,
    h('h1', {}, 'Host ', h('span', { class: 'hostname' }, name)),
    info ? h('p', { class: 'hostinfo' },
      h('span', { class: `status ${info.status}` }, info.status), ` · last seen ${local(info.last_seen)}`,
      info.agent_version ? ` · agent ${info.agent_version}` : '', info.os ? ` · ${info.os}` : '',
      ' · ', h('a', { href: ctx.href('alerts', [], { host: name, state: 'all' }) }, 'alerts')) : null,
    exportLinks({ host: name, since, until }),
    atForm, error,
    h('h2', { id: 'listeners-title' }, at ? `Listeners as it was at ${local(at)}` : 'Listeners now', ` (${now.length})`),
    now.length ? listenersTable(now, 'listeners') : note(at ? 'Nothing listened then.' : 'Nothing listens now.'),
    h('h2', {}, 'Timeline'),
    windowForm,
    h('p', { class: 'help' }, 'Hover a bar for its owner and times; click to see the host as it was then; drag across to zoom.'),
    more,
    h('div', { class: 'timeline-box', id: 'timeline' }, history.body.length ? tl : note('No listener in this window.')),
    h('h2', {}, 'Diff between two moments'),
    diffForm,
    diff ? diffSection(diff) : null);
}
