// Billing drift: the open rows of the reconciliation report, each with its explanation (which
// says what to do, or what the sync already did).

import { html, Badge, ErrorText, useQuery } from '../ui.js';
import { date, json } from '../format.js';

const LIST = `{ billingDrift(first: 50, openOnly: true) { totalCount nodes {
  id kind explanation expected actual autoFixed subscriptionId firstSeenAt lastSeenAt license { id key } } } }`;

export function Billing() {
  const { data, error } = useQuery(LIST, {});
  const rows = data ? data.billingDrift.nodes : [];
  return html`<section aria-labelledby="billing-title">
    <h1 id="billing-title">Billing drift</h1>
    <${ErrorText} error=${error} />
    ${data && rows.length === 0 ? html`<p class="empty">No open drift: licenses and subscriptions agree.</p>` : ''}
    ${rows.length ? html`<table class="list" aria-describedby="billing-title">
      <thead><tr><th scope="col">Kind</th><th scope="col">License</th><th scope="col">Subscription</th>
        <th scope="col">Explanation and suggested action</th><th scope="col">Expected / actual</th><th scope="col">Seen</th></tr></thead>
      <tbody>${rows.map((row) => html`<tr key=${row.id} data-drift=${row.id}>
        <td><${Badge} value=${row.kind} /></td>
        <td>${row.license ? html`<a href=${`#/licenses/${row.license.id}`}>${row.license.key}</a>` : '\u2014'}</td>
        <td><code>${row.subscriptionId || '\u2014'}</code></td>
        <td>${row.explanation}
          <div class=${row.autoFixed ? 'fixed' : 'todo'}>${row.autoFixed ? 'Fixed by the sync: nothing to do.' : 'Needs a person: see above.'}</div></td>
        <td><details><summary>Show</summary><pre>${json({ expected: row.expected, actual: row.actual })}</pre></details></td>
        <td>${date(row.firstSeenAt)}<br /><span class="muted">last ${date(row.lastSeenAt)}</span></td>
      </tr>`)}</tbody>
    </table>` : ''}
  </section>`;
}
