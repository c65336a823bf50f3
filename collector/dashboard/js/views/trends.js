// Trends: open listeners over time (fleet or one host), ports first seen in
// the last 24 h and 7 d, short-lived and recurring listeners, top ports.
// State: #/trends?host=&bucket=hour|day

import * as api from '../api.js';
import { h, put, table, note } from '../dom.js';
import { local } from '../time.js';
import { listenersChart } from '../chart.js';

export async function render(box, ctx) {
  const p = ctx.params;
  const bucket = p.get('bucket') === 'day' ? 'day' : 'hour';
  const host = p.get('host');
  const t = await api.get('/trends', { host, bucket });
  const hostInput = h('input', { id: 't-host', value: host || '', placeholder: 'all hosts', size: 14 });
  const bucketSelect = h('select', { id: 't-bucket' },
    ['hour', 'day'].map((b) => h('option', { value: b, selected: b === bucket }, b === 'hour' ? 'last 24 h, by hour' : 'last 7 d, by day')));
  const f = h('form', { id: 'trend-filters', class: 'filters' },
    h('label', { for: 't-host' }, 'Host ', hostInput), h('label', { for: 't-bucket' }, 'Window ', bucketSelect),
    h('button', { type: 'submit' }, 'Show'));
  f.addEventListener('submit', (e) => {
    e.preventDefault();
    ctx.go('trends', [], { host: hostInput.value.trim(), bucket: bucketSelect.value === 'day' ? 'day' : '' });
  });
  const chartBox = h('div', { class: 'chart', id: 'trend-chart' });
  const hostLink = (name) => h('a', { href: ctx.href('host', [name]) }, name);
  const firstSeen = (rows, id) => (rows.length ? table([
    { title: 'Port', cell: (x) => h('a', { href: ctx.href('port', [x.port], { proto: x.proto }) }, `${x.proto}/${x.port}`) },
    { title: 'Host', cell: (x) => hostLink(x.host) },
    { title: 'First seen', cell: (x) => local(x.first_seen) },
  ], rows, { id }) : note('None.'));
  put(box,
    h('h1', {}, 'Trends', host ? ` on ${host}` : ', fleet-wide'),
    f,
    chartBox,
    h('h2', {}, 'Ports first seen in the last 24 h'), firstSeen(t.new_ports_24h, 'new-24h'),
    h('h2', {}, 'Ports first seen in the last 7 days'), firstSeen(t.new_ports_7d, 'new-7d'),
    h('h2', {}, 'Short-lived listeners (open less than a minute)'),
    t.short_lived.length ? table([
      { title: 'Host', cell: (x) => hostLink(x.host) },
      { title: 'Port', cell: (x) => `${x.proto}/${x.port}` },
      { title: 'Process', cell: (x) => x.process || '-' },
      { title: 'Times', class: 'num', cell: (x) => String(x.count) },
      { title: 'Shortest', class: 'num', cell: (x) => `${(x.shortest_ms / 1000).toFixed(1)} s` },
      { title: 'Last opened', cell: (x) => local(x.last_opened_at) },
    ], t.short_lived, { id: 'short-lived' }) : note('None.'),
    h('h2', {}, 'Recurring listeners (same hour on 3 days or more)'),
    t.recurring.length ? table([
      { title: 'Host', cell: (x) => hostLink(x.host) },
      { title: 'Port', cell: (x) => `${x.proto}/${x.port}` },
      { title: 'Hour (UTC)', class: 'num', cell: (x) => String(x.hour_utc) },
      { title: 'Days', class: 'num', cell: (x) => String(x.days) },
    ], t.recurring, { id: 'recurring' }) : note('None.'),
    h('h2', {}, 'Top ports'),
    t.top_ports.length ? table([
      { title: 'Port', cell: (x) => h('a', { href: ctx.href('port', [x.port], { proto: x.proto }) }, `${x.proto}/${x.port}`) },
      { title: 'Hosts', class: 'num', cell: (x) => String(x.hosts) },
    ], t.top_ports, { id: 'top-ports' }) : note('None.'));
  listenersChart(chartBox, t.open_listeners, { title: 'Open listeners', height: 200 });
}
