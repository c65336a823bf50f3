// Alerts: open, acknowledged, resolved; filters by state and host (the
// collector filters) and severity and kind; admins acknowledge with a
// comment. Each alert links to its host's timeline at the alert's time.
// State: #/alerts?state=&host=&severity=&kind=

import * as api from '../api.js';
import { h, put, table, note } from '../dom.js';
import { local } from '../time.js';

const STATES = ['active', 'open', 'acknowledged', 'resolved', 'all'];
const SEVERITIES = ['', 'critical', 'warning', 'info'];

function filters(ctx) {
  const p = ctx.params;
  const select = (id, values, current, label) => h('label', { for: id }, `${label} `,
    h('select', { id, name: id }, values.map((v) => h('option', { value: v, selected: (current || '') === v }, v || 'any'))));
  const f = h('form', { id: 'alert-filters', class: 'filters' },
    select('a-state', STATES, p.get('state') || 'active', 'State'),
    select('a-severity', SEVERITIES, p.get('severity'), 'Severity'),
    h('label', { for: 'a-kind' }, 'Kind ', h('input', { id: 'a-kind', value: p.get('kind') || '', placeholder: 'risky-port-exposed', size: 18 })),
    h('label', { for: 'a-host' }, 'Host ', h('input', { id: 'a-host', value: p.get('host') || '', size: 14 })),
    h('button', { type: 'submit' }, 'Filter'));
  f.addEventListener('submit', (e) => {
    e.preventDefault();
    ctx.go('alerts', [], {
      state: f.elements['a-state'].value === 'active' ? '' : f.elements['a-state'].value,
      severity: f.elements['a-severity'].value, kind: f.elements['a-kind'].value.trim(), host: f.elements['a-host'].value.trim(),
    });
  });
  return f;
}

function ackForm(alert, ctx) {
  const comment = h('input', { id: `ack-comment-${alert.id}`, name: 'comment', required: true, placeholder: 'what you are doing about it', 'aria-label': `comment for alert ${alert.id}` });
  const status = h('span', { 'aria-live': 'polite' });
  const f = h('form', { class: 'ack', id: `ack-${alert.id}` }, comment, h('button', { type: 'submit', id: `ack-button-${alert.id}` }, 'Acknowledge'), status);
  f.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api.change('POST', `/alerts/${alert.id}/ack`, { comment: comment.value });
    } catch (err) {
      if (err instanceof api.SignedOut) {
        ctx.go('alerts', [], Object.fromEntries(ctx.params));
        return;
      }
      put(status, note(err.message, 'error'));
      return;
    }
    ctx.go('alerts', [], Object.fromEntries(ctx.params));
  });
  return f;
}

export async function render(box, ctx) {
  const p = ctx.params;
  const host = p.get('host');
  const rows = await api.get('/alerts', { state: p.get('state'), host, limit: 1000 });
  const severity = p.get('severity');
  const kind = p.get('kind');
  const shown = rows.filter((a) => (!severity || a.severity === severity) && (!kind || a.kind === kind));
  const admin = ctx.session.role === 'admin';
  const columns = [
    { title: 'ID', class: 'num', cell: (a) => String(a.id) },
    { title: 'Severity', cell: (a) => h('span', { class: `sev ${a.severity}` }, a.severity) },
    { title: 'Kind', cell: (a) => a.kind },
    { title: 'Host', cell: (a) => h('a', { href: ctx.href('host', [a.host], { at: a.opened_at }) }, a.host) },
    { title: 'Message', cell: (a) => h('span', { class: 'message' }, a.message) },
    { title: 'State', cell: (a) => h('span', { class: `state ${a.state}` }, a.state) },
    { title: 'Opened', cell: (a) => local(a.opened_at) },
    {
      title: 'Acknowledged',
      cell: (a) => (a.acked_by ? [`${a.acked_by}, ${local(a.acked_at)}: `, h('q', {}, a.ack_comment || '')]
        : a.state === 'open' && admin ? ackForm(a, ctx) : '-'),
    },
  ];
  put(box,
    h('h1', {}, 'Alerts'),
    filters(ctx),
    admin ? null : h('p', { class: 'help' }, 'Acknowledging takes an admin sign-in.'),
    h('p', { class: 'count' }, `${shown.length} alerts`),
    shown.length ? table(columns, shown, { id: 'alerts' }, (a) => ({ dataset: { id: a.id, state: a.state } })) : note('No alert matches.'));
}
