// Fleet: every host, its status, last report, open listeners and open
// alerts by severity; filters by name glob, tag and status; a chart of the
// fleet's open listeners over the last 24 hours.

import * as api from '../api.js';
import { h, put, table, note } from '../dom.js';
import { local, ago } from '../time.js';
import uPlot from '../../vendor/uplot/uPlot.esm.js';

/** A glob (`web-*`, `db-?`) as a whole-name test. */
export function globTest(glob) {
  if (!glob) return () => true;
  const re = new RegExp(`^${glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  return (name) => re.test(name);
}

function tagTest(tag) {
  if (!tag) return () => true;
  const [k, v] = tag.split('=', 2);
  return (tags) => Object.prototype.hasOwnProperty.call(tags || {}, k) && (v === undefined || tags[k] === v);
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
  const xs = trends.open_listeners.map((p) => new Date(p.at).getTime() / 1000);
  const ys = trends.open_listeners.map((p) => p.listeners);
  put(box);
  const width = Math.max(300, Math.min(box.clientWidth || 900, 1200));
  // eslint-disable-next-line no-new
  new uPlot({
    width, height: 180, title: 'Open listeners, fleet-wide, last 24 h',
    series: [{}, { label: 'listeners', stroke: '#2a7ab0', fill: 'rgba(42,122,176,0.15)' }],
    axes: [{}, { size: 60 }],
  }, [xs, ys], box);
}

export async function render(box, ctx) {
  const [hosts, alerts] = await Promise.all([api.get('/hosts'), api.get('/alerts', { limit: 10000 })]);
  const p = ctx.params;
  const byName = globTest(p.get('q'));
  const byTag = tagTest(p.get('tag'));
  const status = p.get('status');
  const shown = hosts.filter((x) => byName(x.host) && byTag(x.tags) && (!status || x.status === status));
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
    h('p', { class: 'count' }, `${shown.length} of ${hosts.length} hosts`),
    shown.length ? table(columns, shown, { id: 'hosts' }) : note('No host matches.'),
    chartBox);
  chart(chartBox).catch((e) => put(chartBox, note(`No chart: ${e.message}`, 'error')));
}
