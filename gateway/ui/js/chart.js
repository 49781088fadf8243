// A small line chart drawn as inline SVG from the samples a page has collected.

import { s } from './dom.js';
import { count } from './format.js';

/** `samples`: [{t: ms since epoch, v: number}], oldest first. */
export function lineChart(samples, { label, width = 1000, height = 220 } = {}) {
  const pad = { l: 56, r: 10, t: 10, b: 22 };
  const w = width - pad.l - pad.r;
  const ht = height - pad.t - pad.b;
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label });
  svg.append(s('title', {}, label));
  if (samples.length === 0) return svg;
  const t0 = samples[0].t;
  const t1 = Math.max(samples[samples.length - 1].t, t0 + 1000);
  const vmax = Math.max(1, ...samples.map((p) => p.v));
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * w;
  const y = (v) => pad.t + ht - (v / vmax) * ht;
  svg.append(
    s('line', { class: 'axis', x1: pad.l, y1: pad.t + ht, x2: pad.l + w, y2: pad.t + ht }),
    s('line', { class: 'axis', x1: pad.l, y1: pad.t, x2: pad.l, y2: pad.t + ht }),
    s('text', { x: pad.l - 6, y: pad.t + 10, 'text-anchor': 'end' }, count(vmax)),
    s('text', { x: pad.l - 6, y: pad.t + ht, 'text-anchor': 'end' }, '0'),
    s('text', { x: pad.l, y: height - 6 }, new Date(t0).toLocaleTimeString()),
    s('text', { x: pad.l + w, y: height - 6, 'text-anchor': 'end' }, new Date(t1).toLocaleTimeString()),
  );
  const points = samples.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
  const last = samples[samples.length - 1];
  svg.append(s('polyline', { class: 'line', points }), s('circle', { class: 'dot', cx: x(last.t).toFixed(1), cy: y(last.v).toFixed(1), r: 3 }));
  return svg;
}
