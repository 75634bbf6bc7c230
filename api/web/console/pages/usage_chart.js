// One meter's `usageHistory` as an inline SVG bar chart (drawn here: no chart library), with the
// same numbers in a table for screen readers; daily over 30 days or hourly over 48 hours.

import { useState } from 'preact/hooks';

import { html, ErrorText, useQuery } from '../ui.js';
import { date } from '../format.js';

const HISTORY = `query($id: ID, $meter: String!, $from: DateTime, $bucket: UsageBucket) {
  license(id: $id) { id usageHistory(meter: $meter, from: $from, bucket: $bucket) { start quantity } } }`;

const RANGES = {
  DAY: { label: 'Daily, 30 days', hours: 30 * 24 },
  HOUR: { label: 'Hourly, 48 hours', hours: 48 },
};

const WIDTH = 640;
const HEIGHT = 160;
const LEFT = 44;
const BOTTOM = 20;

function Bars({ points, meter }) {
  const max = Math.max(1, ...points.map((p) => p.quantity));
  const plotWidth = WIDTH - LEFT;
  const plotHeight = HEIGHT - BOTTOM - 6;
  const step = plotWidth / Math.max(1, points.length);
  const total = points.reduce((sum, p) => sum + p.quantity, 0);
  return html`<svg class="chart" viewBox=${`0 0 ${WIDTH} ${HEIGHT}`} role="img"
      aria-label=${`${meter}: ${total} in ${points.length} buckets, at most ${max} in one`}>
    <line x1=${LEFT} y1=${HEIGHT - BOTTOM} x2=${WIDTH} y2=${HEIGHT - BOTTOM} class="axis" />
    <line x1=${LEFT} y1="6" x2=${LEFT} y2=${HEIGHT - BOTTOM} class="axis" />
    <text x=${LEFT - 6} y="14" text-anchor="end" class="tick">${max}</text>
    <text x=${LEFT - 6} y=${HEIGHT - BOTTOM} text-anchor="end" class="tick">0</text>
    ${points.map((p, i) => {
      const h = (p.quantity / max) * plotHeight;
      return html`<rect x=${LEFT + i * step + 1} y=${HEIGHT - BOTTOM - h} width=${Math.max(1, step - 2)} height=${h} class="bar">
        <title>${date(p.start)}: ${p.quantity}</title></rect>`;
    })}
    ${points.length ? html`
      <text x=${LEFT} y=${HEIGHT - 4} class="tick">${date(points[0].start)}</text>
      <text x=${WIDTH} y=${HEIGHT - 4} text-anchor="end" class="tick">${date(points[points.length - 1].start)}</text>` : ''}
  </svg>`;
}

export function UsageChart({ licenseId, meter }) {
  const [bucket, setBucket] = useState('DAY');
  const [from] = useState(() => ({
    DAY: new Date(Date.now() - RANGES.DAY.hours * 3600e3).toISOString(),
    HOUR: new Date(Date.now() - RANGES.HOUR.hours * 3600e3).toISOString(),
  }));
  const { data, error } = useQuery(HISTORY, { id: licenseId, meter, from: from[bucket], bucket });
  const points = data && data.license ? data.license.usageHistory : [];
  const selectId = `range-${meter}`;
  return html`<div class="usage-chart" data-meter=${meter}>
    <label for=${selectId}>History</label>
    <select id=${selectId} value=${bucket} onChange=${(e) => setBucket(e.target.value)}>
      ${Object.entries(RANGES).map(([value, r]) => html`<option value=${value}>${r.label}</option>`)}
    </select>
    <${ErrorText} error=${error} />
    ${data ? html`<${Bars} points=${points} meter=${meter} />
      <details><summary>As a table</summary><table class="list compact">
        <thead><tr><th scope="col">From</th><th scope="col">Quantity</th></tr></thead>
        <tbody>${points.filter((p) => p.quantity > 0).map((p) => html`<tr><td>${date(p.start)}</td><td>${p.quantity}</td></tr>`)}</tbody>
      </table></details>` : ''}
  </div>`;
}
