// Port: who holds port P across the fleet, now or as it was at a time, and
// the port's history on every host (when it opened and closed where).
// State: #/port/P?proto=&at=&since=&until=

import * as api from '../api.js';
import { h, put, table, note, exportLinks } from '../dom.js';
import { local, parse } from '../time.js';
import { timeline } from '../timeline.js';
import { address, processes } from './host.js';

const WEEK = 7 * 864e5;

function form(ctx, port, proto, at) {
  const f = h('form', { id: 'port-form', class: 'filters' },
    h('label', { for: 'port' }, 'Port ', h('input', { id: 'port', name: 'port', value: port || '', inputmode: 'numeric', size: 6, required: true })),
    h('label', { for: 'proto' }, 'Protocol ', h('select', { id: 'proto', name: 'proto' },
      ['', 'tcp', 'udp'].map((x) => h('option', { value: x, selected: (proto || '') === x }, x || 'any')))),
    h('label', { for: 'port-at' }, 'At ', h('input', { id: 'port-at', name: 'at', value: at ? local(at) : '', placeholder: 'now, -2h, 2026-11-25 03:00', size: 20 })),
    h('button', { type: 'submit', id: 'port-show' }, 'Show'));
  const error = h('div', { 'aria-live': 'polite' });
  f.addEventListener('submit', (e) => {
    e.preventDefault();
    const n = Number(f.elements.port.value);
    if (!Number.isInteger(n) || n < 0 || n > 65535) {
      put(error, note('A port is a number from 0 to 65535.', 'error'));
      return;
    }
    try {
      ctx.go('port', [n], { proto: f.elements.proto.value, at: parse(f.elements.at.value) });
    } catch (err) {
      put(error, note(err.message, 'error'));
    }
  });
  return [f, error];
}

export async function render(box, ctx) {
  const port = ctx.segs[0];
  const p = ctx.params;
  const proto = p.get('proto');
  const at = p.get('at');
  if (port === undefined) {
    put(box, h('h1', {}, 'Port'), form(ctx, '', proto, at), note('Which port? Who holds it fleet-wide, and its history.'));
    return;
  }
  const until = p.get('until') || null;
  const untilMs = until ? new Date(until).getTime() : Date.now();
  const since = p.get('since') || new Date(untilMs - WEEK).toISOString();
  const [who, history] = await Promise.all([
    api.get('/who', { port, proto, at }),
    api.getWithHeaders(`/ports/${encodeURIComponent(port)}/history`, { proto, since, until, limit: 10000 }),
  ]);
  const total = Number(history.headers.get('x-total-count') || history.body.length);
  const whoTable = table([
    { title: 'Host', cell: (r) => h('a', { href: ctx.href('host', [r.host], { at }) }, r.host) },
    { title: 'Listener', cell: (r) => address(r) },
    { title: 'Exposure', cell: (r) => h('span', { class: `exp ${r.exposure}` }, r.exposure) },
    { title: 'Processes', cell: processes },
    { title: 'Since', cell: (r) => local(r.opened_at) },
  ], who, { id: 'who', class: 'listeners' }, (r) => ({ dataset: { host: r.host } }));
  const tl = timeline(history.body, {
    since: new Date(since).getTime(), until: untilMs,
    key: (r) => `${r.host}/${r.netns}/${r.proto}/${r.local_addr}`,
    label: (r) => `${r.host} ${address(r)}`,
    tip: (r) => `${r.host} ${address(r)}\nopened ${local(r.opened_at)}\n${r.closed_at ? `closed ${local(r.closed_at)}` : 'still open'}`,
    marks: at ? [new Date(at).getTime()] : [],
    onPick: (ms) => ctx.go('port', [port], { proto, at: new Date(ms).toISOString(), since: p.get('since'), until }),
    onZoom: (a, b) => ctx.go('port', [port], { proto, at, since: new Date(a).toISOString(), until: new Date(b).toISOString() }),
  });
  put(box,
    h('h1', {}, `Port ${port}${proto ? `/${proto}` : ''}`),
    form(ctx, port, proto, at),
    exportLinks({ port, since, until }),
    h('h2', {}, at ? `Held as it was at ${local(at)}` : 'Held now', ` (${who.length} listeners)`),
    who.length ? whoTable : note(at ? 'No host held it then.' : 'No host holds it now.'),
    h('h2', {}, `History, ${local(since)} to ${until ? local(until) : 'now'}`),
    total > history.body.length ? note(`The latest ${history.body.length} of ${total} intervals.`) : null,
    h('div', { class: 'timeline-box', id: 'port-timeline' }, history.body.length ? tl : note('It was not open in this window.')),
    history.body.length ? table([
      { title: 'Host', cell: (r) => h('a', { href: ctx.href('host', [r.host], { at: r.opened_at }) }, r.host) },
      { title: 'Listener', cell: (r) => address(r) },
      { title: 'Opened', cell: (r) => local(r.opened_at) },
      { title: 'Closed', cell: (r) => (r.closed_at ? local(r.closed_at) : 'still open') },
      { title: 'Processes', cell: processes },
    ], [...history.body].reverse(), { id: 'port-history' }) : null);
}
