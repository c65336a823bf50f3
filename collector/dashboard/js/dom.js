// Building the page from data. Every string, above all what agents report
// (process names, command lines, units, tags), becomes a text node: nothing
// here parses markup, so a process named `<img src=x onerror=...>` shows as
// those characters.

const SVG_NS = 'http://www.w3.org/2000/svg';

function fill(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (/^on/i.test(name) || name === 'style' || name === 'srcdoc') {
      throw new Error(`attribute ${name} is not set from data`);
    }
    if (name === 'dataset') {
      for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    } else if (name === 'value' && 'value' in el) {
      // The default too: what differs from it was typed (a refresh keeps it).
      if ('defaultValue' in el) el.defaultValue = String(value);
      el.value = String(value);
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** An HTML element: h('td', {class: 'port'}, 'text', otherNode). */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replaces everything in `el` with `children`. */
export function put(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table of `rows`, each cell given by a column's `cell(row)`, each row's attributes by `rowAttrs(row)`. */
export function table(columns, rows, attrs = {}, rowAttrs = () => ({})) {
  return h('table', attrs,
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c.title)))),
    h('tbody', {}, rows.map((r) => h('tr', rowAttrs(r), columns.map((c) => h('td', c.class ? { class: c.class } : {}, c.cell(r)))))));
}

/** A message in place of a view's content. */
export function note(text, kind = 'info') {
  return h('p', { class: `note ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}

/**
 * Links that download the intervals of the current view (`GET /api/v1/export`
 * with `params`: host, port, since, until) as CSV and as NDJSON; the session
 * cookie goes with them.
 */
export function exportLinks(params) {
  const link = (format, label) => {
    const q = new URLSearchParams({ format });
    for (const [k, v] of Object.entries(params)) {
      if (v !== null && v !== undefined && v !== '') q.set(k, String(v));
    }
    return h('a', { href: `/api/v1/export?${q}`, download: `portwatch-export.${format}`, class: `export-${format}` }, label);
  };
  return h('p', { class: 'export' }, 'Export these intervals: ', link('csv', 'CSV'), ' · ', link('ndjson', 'NDJSON'));
}
