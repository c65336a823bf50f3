// Drift and baselines: the findings now, most serious first; every baseline
// with its source and its change log (who, when, why); admins apply a
// baseline file or remove one, with a comment. State: #/drift?host=&kind=

import * as api from '../api.js';
import { h, put, table, note } from '../dom.js';
import { local } from '../time.js';

function filters(ctx) {
  const p = ctx.params;
  const host = h('input', { id: 'd-host', value: p.get('host') || '', size: 14 });
  const kind = h('input', { id: 'd-kind', value: p.get('kind') || '', placeholder: 'risky-port-exposed,owner-mismatch', size: 30 });
  const f = h('form', { id: 'drift-filters', class: 'filters' },
    h('label', { for: 'd-host' }, 'Host ', host), h('label', { for: 'd-kind' }, 'Kinds ', kind),
    h('button', { type: 'submit' }, 'Filter'));
  f.addEventListener('submit', (e) => {
    e.preventDefault();
    ctx.go('drift', [], { host: host.value.trim(), kind: kind.value.trim() });
  });
  return f;
}

/** A form that makes an admin's change, then shows the view again. */
function changeForm(id, fields, label, send, ctx) {
  const status = h('span', { 'aria-live': 'polite' });
  const f = h('form', { id, class: 'filters' }, fields, h('button', { type: 'submit' }, label), status);
  f.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await send(f);
    } catch (err) {
      if (err instanceof api.SignedOut) {
        ctx.go('drift', [], Object.fromEntries(ctx.params));
        return;
      }
      put(status, note(err.message, 'error'));
      return;
    }
    ctx.go('drift', [], Object.fromEntries(ctx.params));
  });
  return f;
}

export async function render(box, ctx) {
  const p = ctx.params;
  const [findings, baselines, log] = await Promise.all([
    api.get('/drift', { host: p.get('host'), kind: p.get('kind'), limit: 1000 }),
    api.get('/baselines'),
    api.get('/baseline-log'),
  ]);
  const admin = ctx.session.role === 'admin';
  const findingsTable = table([
    { title: 'Severity', cell: (x) => h('span', { class: `sev ${x.severity}` }, x.severity) },
    { title: 'Kind', cell: (x) => x.kind },
    { title: 'Host', cell: (x) => h('a', { href: ctx.href('host', [x.host]) }, x.host) },
    { title: 'Finding', cell: (x) => h('span', { class: 'message' }, x.message) },
    { title: 'Baseline', cell: (x) => x.baseline || '-' },
  ], findings, { id: 'findings' });
  const apply = admin ? changeForm('baseline-apply', [
    h('label', { for: 'b-source', class: 'wide' }, 'Baseline file (TOML) ',
      h('textarea', { id: 'b-source', name: 'source', rows: 8, cols: 80, required: true, spellcheck: 'false' })),
    h('label', { for: 'b-comment' }, 'Why ', h('input', { id: 'b-comment', name: 'comment', required: true, size: 40 })),
  ], 'Apply', (f) => api.change('POST', '/baselines', { source: f.elements.source.value, comment: f.elements.comment.value }), ctx) : null;
  const baselineRows = baselines.map((b) => h('details', { class: 'baseline', 'data-name': b.name },
    h('summary', {}, h('strong', {}, b.name), ` · applied ${local(b.applied_at)} by ${b.applied_by}`,
      b.baseline ? ` · ${b.baseline.listeners.length} listeners` : ' · no longer parses'),
    h('pre', { class: 'source' }, b.source),
    admin ? changeForm(`baseline-remove-${b.name}`, [
      h('label', {}, 'Why ', h('input', { name: 'comment', required: true, size: 40, 'aria-label': `why remove ${b.name}` })),
    ], 'Remove', (f) => api.change('DELETE', `/baselines/${encodeURIComponent(b.name)}?comment=${encodeURIComponent(f.elements.comment.value)}`), ctx) : null));
  put(box,
    h('h1', {}, 'Drift and baselines'),
    filters(ctx),
    h('h2', {}, `Findings now (${findings.length}${findings.length === 1000 ? ', the 1,000 most serious' : ''})`),
    findings.length ? findingsTable : note('No finding.'),
    h('h2', {}, `Baselines (${baselines.length})`),
    baselines.length ? baselineRows : note('No baseline is applied: portwatch baseline learn proposes one.'),
    apply ? [h('h3', {}, 'Apply a baseline'), apply] : h('p', { class: 'help' }, 'Applying and removing baselines takes an admin sign-in.'),
    h('h2', {}, 'Change log'),
    log.length ? table([
      { title: 'When', cell: (x) => local(x.at) },
      { title: 'Baseline', cell: (x) => x.name },
      { title: 'Change', cell: (x) => x.action },
      { title: 'Who', cell: (x) => x.actor },
      { title: 'Why', cell: (x) => x.comment || '-' },
    ], [...log].reverse(), { id: 'baseline-log' }) : note('No change yet.'));
}
