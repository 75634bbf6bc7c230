// Anomalies: the open ones with their explanation and evidence; acknowledging with a note
// (roles that review usage).

import { useState } from 'preact/hooks';

import { gql } from '../api.js';
import { html, ActionButton, Badge, ErrorText, can, useQuery } from '../ui.js';
import { date, json, relative } from '../format.js';

const LIST = `{ anomalies(first: 50, filter: {status: OPEN}) { totalCount nodes {
  id kind explanation evidence meter detectedAt lastSeenAt
  license { id key } device { id name fingerprint } } } }`;
const ACKNOWLEDGE = `mutation($id: ID!, $note: String) { acknowledgeAnomaly(id: $id, note: $note) { id status note } }`;

function Anomaly({ anomaly, role, onAcknowledged }) {
  const [note, setNote] = useState('');
  const noteId = `note-${anomaly.id}`;
  return html`<article class="card" data-anomaly=${anomaly.id} aria-labelledby=${`title-${anomaly.id}`}>
    <h2 id=${`title-${anomaly.id}`}><${Badge} value=${anomaly.kind} />
      ${anomaly.license ? html` <a href=${`#/licenses/${anomaly.license.id}`}>${anomaly.license.key}</a>` : ''}
      ${anomaly.device ? html` <span class="muted">device ${anomaly.device.name || anomaly.device.fingerprint}</span>` : ''}
      ${anomaly.meter ? html` <span class="muted">meter ${anomaly.meter}</span>` : ''}</h2>
    <p>${anomaly.explanation}</p>
    <p class="muted">Detected ${date(anomaly.detectedAt)}; last seen ${relative(anomaly.lastSeenAt)}.</p>
    <details><summary>Evidence</summary><pre>${json(anomaly.evidence)}</pre></details>
    ${can(role, 'reviewUsage') ? html`<div class="ack">
      <label for=${noteId}>Note</label>
      <input id=${noteId} type="text" maxlength="500" value=${note} onInput=${(e) => setNote(e.target.value)}
        placeholder="What you found or did" />
      <${ActionButton} label="Acknowledge" action=${() => gql(ACKNOWLEDGE, { id: anomaly.id, note: note || null })}
        onDone=${() => onAcknowledged(anomaly.id)} />
    </div>` : ''}
  </article>`;
}

export function Anomalies({ role }) {
  const { data, error } = useQuery(LIST, {});
  const [done, setDone] = useState([]);
  const rows = data ? data.anomalies.nodes.filter((a) => !done.includes(a.id)) : [];
  return html`<section aria-labelledby="anomalies-title">
    <h1 id="anomalies-title">Open anomalies</h1>
    <${ErrorText} error=${error} />
    ${data && rows.length === 0 ? html`<p class="empty">No open anomalies.</p>` : ''}
    ${rows.map((anomaly) => html`<${Anomaly} key=${anomaly.id} anomaly=${anomaly} role=${role}
      onAcknowledged=${(id) => setDone((d) => [...d, id])} />`)}
  </section>`;
}
