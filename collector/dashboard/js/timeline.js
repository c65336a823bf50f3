// The interval timeline: a bar per listener (or per host and listener) over
// a window, in SVG. Hover a bar for its owner and times (an SVG <title>, as
// text); click to pick a moment; drag across to zoom to that span.

import { s } from './dom.js';
import { local } from './time.js';

const WIDTH = 1000;
const LABEL = 190;
const ROW = 18;
const AXIS = 24;

/**
 * rows: intervals ({opened_at, closed_at, ...}); key(row) groups them into
 * lines, label(row) names a line, tip(row) is a bar's hover text.
 * since, until: the window (ms). marks: moments to draw (ms). onPick(ms),
 * onZoom(fromMs, toMs): what a click and a drag do.
 */
export function timeline(rows, { since, until, key, label, tip, marks = [], onPick, onZoom }) {
  const lines = new Map();
  for (const r of rows) {
    const k = key(r);
    if (!lines.has(k)) lines.set(k, { label: label(r), rows: [] });
    lines.get(k).rows.push(r);
  }
  const height = AXIS + Math.max(1, lines.size) * ROW + 4;
  const span = Math.max(1, until - since);
  const x = (ms) => LABEL + ((Math.min(Math.max(ms, since), until) - since) / span) * (WIDTH - LABEL - 4);
  const svg = s('svg', {
    class: 'timeline', viewBox: `0 0 ${WIDTH} ${height}`, role: 'img',
    'aria-label': `timeline of ${lines.size} listeners from ${local(since)} to ${local(until)}`,
  });
  for (let i = 0; i <= 5; i += 1) {
    const t = since + (span * i) / 5;
    const tx = x(t);
    svg.appendChild(s('line', { class: 'grid', x1: tx, x2: tx, y1: AXIS - 4, y2: height }));
    svg.appendChild(s('text', { class: 'tick', x: tx, y: 14, 'text-anchor': i === 0 ? 'start' : i === 5 ? 'end' : 'middle' }, local(t).slice(5, 16)));
  }
  let y = AXIS;
  for (const [k, line] of lines) {
    const g = s('g', { class: 'line', 'data-key': k });
    g.appendChild(s('text', { class: 'label', x: 4, y: y + ROW - 5 }, line.label));
    for (const r of line.rows) {
      const from = new Date(r.opened_at).getTime();
      const to = r.closed_at ? new Date(r.closed_at).getTime() : until;
      if (to < since || from > until) continue;
      const bx = x(from);
      const w = Math.max(2, x(to) - bx);
      g.appendChild(s('rect', {
        class: r.closed_at ? 'bar closed' : 'bar open', x: bx, y: y + 3, width: w, height: ROW - 6, rx: 2,
      }, s('title', {}, tip(r))));
    }
    svg.appendChild(g);
    y += ROW;
  }
  for (const m of marks) {
    if (m >= since && m <= until) {
      svg.appendChild(s('line', { class: 'mark', x1: x(m), x2: x(m), y1: AXIS - 4, y2: height }));
    }
  }
  const sel = s('rect', { class: 'selection', x: 0, y: AXIS - 4, width: 0, height: height - AXIS + 4, visibility: 'hidden' });
  svg.appendChild(sel);
  // Pointer: viewBox units -> time.
  const at = (event) => {
    const box = svg.getBoundingClientRect();
    const vx = ((event.clientX - box.left) / box.width) * WIDTH;
    return since + ((vx - LABEL) / (WIDTH - LABEL - 4)) * span;
  };
  let start = null;
  svg.addEventListener('pointerdown', (e) => {
    start = at(e);
    svg.setPointerCapture(e.pointerId);
  });
  svg.addEventListener('pointermove', (e) => {
    if (start === null) return;
    const a = x(Math.min(start, at(e)));
    const b = x(Math.max(start, at(e)));
    sel.setAttribute('x', a);
    sel.setAttribute('width', Math.max(0, b - a));
    sel.setAttribute('visibility', 'visible');
  });
  svg.addEventListener('pointerup', (e) => {
    if (start === null) return;
    const end = at(e);
    const from = Math.max(since, Math.min(start, end));
    const to = Math.min(until, Math.max(start, end));
    start = null;
    sel.setAttribute('visibility', 'hidden');
    if (to - from > span / 200) {
      if (onZoom) onZoom(from, to);
    } else if (onPick && end >= since && end <= until) {
      onPick(end);
    }
  });
  return svg;
}
