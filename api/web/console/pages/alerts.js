// Alerts: the latest ones, new ones as the `alerts` subscription delivers them (no reload),
// and acknowledging (roles with the support capability).

import { useEffect, useState } from 'preact/hooks';

import { gql, subscribeAlerts } from '../api.js';
import { html, ActionButton, Badge, ErrorText, can, useQuery } from '../ui.js';
import { date, relative } from '../format.js';

const FIELDS = 'id kind message createdAt acknowledgedAt license { id key }';
const LIST = `query($open: Boolean) { alerts(first: 50, unacknowledgedOnly: $open) { totalCount nodes { ${FIELDS} } } }`;
const ACKNOWLEDGE = `mutation($id: ID!) { acknowledgeAlert(id: $id) { ${FIELDS} } }`;

export function Alerts({ role }) {
  const [openOnly, setOpenOnly] = useState(true);
  const { data, error } = useQuery(LIST, { open: openOnly });
  const [rows, setRows] = useState([]);
  const [live, setLive] = useState({ state: 'connecting' });

  useEffect(() => {
    if (data) setRows(data.alerts.nodes);
  }, [data]);

  useEffect(() => subscribeAlerts(
    (alert) => setRows((current) => [alert, ...current.filter((a) => a.id !== alert.id)]),
    (state, reason) => setLive({ state, reason }),
  ), []);

  const replace = (alert) => setRows((current) => current
    .map((a) => (a.id === alert.id ? alert : a))
    .filter((a) => !openOnly || !a.acknowledgedAt));

  return html`<section aria-labelledby="alerts-title">
    <div class="title-row">
      <h1 id="alerts-title">Alerts</h1>
      <span class=${`live live-${live.state}`} role="status" data-live=${live.state}>
        ${live.state === 'live' ? 'Live' : live.state === 'connecting' ? 'Connecting...' : `Reconnecting (${live.reason})`}
      </span>
    </div>
    <label class="inline"><input type="checkbox" checked=${openOnly}
      onChange=${(e) => setOpenOnly(e.target.checked)} /> Unacknowledged only</label>
    <${ErrorText} error=${error} />
    ${rows.length === 0 && !error ? html`<p class="empty">No alerts.</p>` : html`
    <table class="list" aria-describedby="alerts-title">
      <thead><tr><th scope="col">Kind</th><th scope="col">Message</th><th scope="col">License</th>
        <th scope="col">Raised</th><th scope="col">Status</th></tr></thead>
      <tbody>
        ${rows.map((alert) => html`<tr key=${alert.id} data-alert=${alert.id} data-kind=${alert.kind}>
          <td><${Badge} value=${alert.kind} /></td>
          <td>${alert.message}</td>
          <td>${alert.license ? html`<a href=${`#/licenses/${alert.license.id}`}>${alert.license.key}</a>` : '\u2014'}</td>
          <td title=${date(alert.createdAt)}>${relative(alert.createdAt)}</td>
          <td>${alert.acknowledgedAt
            ? html`Acknowledged ${relative(alert.acknowledgedAt)}`
            : can(role, 'support')
              ? html`<${ActionButton} label="Acknowledge"
                  action=${() => gql(ACKNOWLEDGE, { id: alert.id })}
                  onDone=${(d) => replace(d.acknowledgeAlert)} />`
              : 'Open'}</td>
        </tr>`)}
      </tbody>
    </table>`}
  </section>`;
}
