// Fleet: every host, its status, last report, open listeners and open
// alerts by severity; filters by name glob, tag and status, applied by the
// collector, which answers a page of hosts at a time; a chart of the fleet's
// open listeners over the last 24 hours.

import * as api from '../api.js';
import { h, put, table, note, exportLinks } from '../dom.js';
import { local, ago } from '../time.js';
import { listenersChart } from '../chart.js';

/** Hosts a page of the table holds; the collector filters and pages (`GET /api/v1/hosts`). */
const PAGE = 500;

/** The `after` of a `Link: <...&after=NAME>; rel="next"` header, if any. */
function nextAfter(link) {
  const m = /<([^>]*)>;\s*rel="next"/.exec(link || '');
  return m ? new URL(m[1], window.location.origin).searchParams.get('after') : null;
}

function filters(ctx) {
  const p = ctx.params;
  const q = h('input', { id: 'f-q', name: 'q', value: p.get('q') || '', placeholder: 'web-*' });
  const tag = h('input', { id: 'f-tag', name: 'tag', value: p.get('tag') || '', placeholder: 'env=prod' });
  const status = h('select', { id: 'f-status', name: 'status' },
    ['', 'up', 'silent'].map((s) => h('option', { value: s, selected: (p.get('status') || '') === s }, s || 'any')));
  const form = h('form', { class: 'filters', id: 'fleet-filters' },
    h('label', {}, 'Host ', q), h('label', {}, 'Tag ', tag), h('label', {}, 'Status ', status),
    h('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    ctx.go('fleet', [], { q: q.value.trim(), tag: tag.value.trim(), status: status.value });
  });
  return form;
}

function severityCounts(alerts) {
  const by = new Map();
  for (const a of alerts) {
    if (a.state !== 'open') continue;
    const c = by.get(a.host) || { critical: 0, warning: 0, info: 0 };
    c[a.severity] = (c[a.severity] || 0) + 1;
    by.set(a.host, c);
  }
  return by;
}

function alertCell(c, ctx, host) {
  if (!c) return '-';
  const parts = ['critical', 'warning', 'info'].filter((s) => c[s]).map((s) => h('span', { class: `sev ${s}` }, `${c[s]} ${s}`));
  return parts.length ? h('a', { href: ctx.href('alerts', [], { host }) }, parts) : '-';
}

async function chart(box) {
  const trends = await api.get('/trends', { bucket: 'hour' });
  put(box);
  listenersChart(box, trends.open_listeners, { title: 'Open listeners, fleet-wide, last 24 h', height: 180 });
}

export async function render(box, ctx) {
  const p = ctx.params;
  const wanted = { q: p.get('q') || '', tag: p.get('tag') || '', status: p.get('status') || '' };
  const [page, alerts] = await Promise.all([
    api.getWithHeaders('/hosts', {
      name: wanted.q, tag: wanted.tag, status: wanted.status, limit: PAGE, after: p.get('after'),
    }),
    api.get('/alerts', { limit: 10000 }),
  ]);
  const shown = page.body;
  const total = Number(page.headers.get('x-total-count') || shown.length);
  const next = nextAfter(page.headers.get('link'));
  const counts = severityCounts(alerts);
  const now = Date.now();
  const columns = [
    { title: 'Host', cell: (x) => h('a', { href: ctx.href('host', [x.host]) }, x.host) },
    { title: 'Status', cell: (x) => h('span', { class: `status ${x.status}` }, x.status) },
    { title: 'Last seen', cell: (x) => h('time', { datetime: x.last_seen, title: local(x.last_seen) }, `${ago(x.last_seen, now)} ago`) },
    { title: 'Listeners', class: 'num', cell: (x) => String(x.listeners) },
    { title: 'Open alerts', cell: (x) => alertCell(counts.get(x.host), ctx, x.host) },
    { title: 'Tags', cell: (x) => Object.entries(x.tags || {}).map(([k, v]) => h('span', { class: 'tag' }, `${k}=${v}`)) },
  ];
  const chartBox = h('div', { class: 'chart', id: 'fleet-chart' });
  put(box,
    h('h1', {}, 'Fleet'),
    filters(ctx),
    exportLinks({}),
    h('p', { class: 'count' }, p.get('after')
      ? `${shown.length} hosts after ${p.get('after')}, of ${total} that match`
      : `${shown.length} of ${total} hosts that match`),
    shown.length ? table(columns, shown, { id: 'hosts' }) : note('No host matches.'),
    h('nav', { class: 'pages', 'aria-label': 'Pages of hosts' },
      p.get('after') ? h('a', { href: ctx.href('fleet', [], wanted) }, 'First page') : null,
      next ? h('a', { href: ctx.href('fleet', [], { ...wanted, after: next }), id: 'hosts-next' }, 'Next page') : null),
    chartBox);
  ctx.later(chart(chartBox).catch((e) => put(chartBox, note(`No chart: ${e.message}`, 'error'))));
}
