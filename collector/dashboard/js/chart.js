// The open-listeners chart (uPlot): as wide as the view, in the page's
// colours, light or dark (the canvas is drawn with the style sheet's values).

import uPlot from '../vendor/uplot/uPlot.esm.js';

/** The width a chart may take: the content width of the page's main box. */
function viewWidth() {
  const main = document.getElementById('main');
  const style = getComputedStyle(main);
  const inner = main.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return Math.max(240, Math.min(Math.floor(inner) || 900, 1200));
}

/** Draws `points` ({at, listeners}) into `box`. */
export function listenersChart(box, points, { title, height }) {
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();
  const axis = { stroke: color('--fg'), grid: { stroke: color('--line') }, ticks: { stroke: color('--line') } };
  // eslint-disable-next-line no-new
  new uPlot({
    width: viewWidth(), height, title,
    series: [{}, { label: 'listeners', stroke: color('--open'), fill: color('--chart-fill') }],
    // Room for a fleet's counts (`400,000`) beside the y axis.
    axes: [axis, { ...axis, size: 80 }],
  }, [points.map((p) => new Date(p.at).getTime() / 1000), points.map((p) => p.listeners)], box);
}
