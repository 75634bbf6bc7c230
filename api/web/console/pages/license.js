// One license: its state and activations, usage per meter with its history, its devices
// (status, last seen, next heartbeat due, pending sync), the audit trail, and the staff actions
// (suspend / reinstate, renew, release a device, export a device's refresh file).

import { useState } from 'preact/hooks';

import { gql } from '../api.js';
import { html, ActionButton, Activations, Badge, ErrorText, can, useQuery } from '../ui.js';
import { date, json, relative } from '../format.js';
import { UsageChart } from './usage_chart.js';

const LICENSE = `query($id: ID, $target: ID) {
  license(id: $id) { id key status statusReason issuedAt expiresAt maxActivations activeDevices entitlements version
    product { name } policy { name } customer { name }
    usage { meter used limit remaining periodStart periodEnd overageUsed lifetimeUsed } }
  auditEvents(first: 25, targetId: $target) { nodes { id action actorLabel createdAt diff } } }`;
// Pages of 50 devices: a connection is priced `first` x its selection, and 100 of these rows
// would pass the API's query complexity limit (1000).
const DEVICES = `query($id: ID, $after: String) {
  license(id: $id) { id devices(first: 50, after: $after) { totalCount pageInfo { hasNextPage endCursor }
    nodes { id name fingerprint status lastSeenAt nextHeartbeatDueAt licenseVersion checkedOutUntil } } } }`;
const SUSPEND = `mutation($id: ID!, $reason: String) { suspendLicense(id: $id, reason: $reason) { id status } }`;
const REINSTATE = `mutation($id: ID!) { reinstateLicense(id: $id) { id status } }`;
const RENEW = `mutation($id: ID!) { renewLicense(id: $id) { id expiresAt } }`;
const RELEASE = `mutation($id: ID!) { releaseDevice(id: $id) { id status } }`;
const EXPORT = `mutation($id: ID!) { exportLicenseFile(deviceId: $id) }`;

function Actions({ license, role, onChanged }) {
  const [reason, setReason] = useState('');
  const support = can(role, 'support');
  const renew = can(role, 'manageLicenses');
  if (!support && !renew) return null;
  return html`<div class="actions" aria-label="License actions" role="group">
    ${support && license.status === 'ACTIVE' ? html`<span class="with-input">
      <label for="suspend-reason">Reason</label>
      <input id="suspend-reason" type="text" maxlength="500" value=${reason} onInput=${(e) => setReason(e.target.value)} />
      <${ActionButton} label="Suspend" kind="danger" action=${() => gql(SUSPEND, { id: license.id, reason: reason || null })}
        onDone=${() => { setReason(''); onChanged(); }} />
    </span>` : ''}
    ${support && license.status === 'SUSPENDED'
      ? html`<${ActionButton} label="Reinstate" action=${() => gql(REINSTATE, { id: license.id })} onDone=${onChanged} />` : ''}
    ${renew ? html`<${ActionButton} label="Renew" action=${() => gql(RENEW, { id: license.id })} onDone=${onChanged} />` : ''}
  </div>`;
}

function RefreshFile({ file, deviceId, onClose }) {
  const href = URL.createObjectURL(new Blob([file], { type: 'text/plain' }));
  return html`<div class="refresh-file" role="region" aria-label="Refresh file">
    <label for=${`file-${deviceId}`}>Refresh file for device ${deviceId}</label>
    <textarea id=${`file-${deviceId}`} readonly rows="8">${file}</textarea>
    <a href=${href} download=${`refresh-${deviceId}.lic`}>Download</a>
    <button type="button" class="quiet" onClick=${onClose}>Close</button>
  </div>`;
}

function Devices({ license, role, round, onChanged }) {
  const [file, setFile] = useState(null);
  const [cursors, setCursors] = useState([null]);
  const { data, error } = useQuery(DEVICES, { id: license.id, after: cursors[cursors.length - 1] }, round);
  const support = can(role, 'support');
  const connection = data && data.license ? data.license.devices : null;
  const devices = connection ? connection.nodes : [];
  return html`<section aria-labelledby="devices-title">
    <h2 id="devices-title">Devices${connection ? ` (${connection.totalCount})` : ''}</h2>
    <${ErrorText} error=${error} />
    ${connection && devices.length === 0 ? html`<p class="empty">No device has activated this license.</p>` : ''}
    ${devices.length ? html`
    <table class="list">
      <thead><tr><th scope="col">Device</th><th scope="col">Status</th><th scope="col">Last seen</th>
        <th scope="col">Next heartbeat due</th><th scope="col">Pending sync</th>${support ? html`<th scope="col">Actions</th>` : ''}</tr></thead>
      <tbody>${devices.map((d) => {
        const pending = d.status === 'PENDING_SYNC' || d.licenseVersion < license.version;
        return html`<tr key=${d.id} data-device=${d.id}>
          <td>${d.name || html`<code>${d.fingerprint.slice(0, 12)}</code>`}</td>
          <td><${Badge} value=${d.status} />${d.checkedOutUntil ? html` <span class="muted">until ${date(d.checkedOutUntil)}</span>` : ''}</td>
          <td title=${date(d.lastSeenAt)}>${relative(d.lastSeenAt)}</td>
          <td title=${date(d.nextHeartbeatDueAt)}>${d.nextHeartbeatDueAt ? relative(d.nextHeartbeatDueAt) : 'none required'}</td>
          <td>${pending ? `yes (holds v${d.licenseVersion} of v${license.version})` : 'no'}</td>
          ${support ? html`<td>${d.status === 'RELEASED' ? '' : html`
            <${ActionButton} label="Release" kind="danger" action=${() => gql(RELEASE, { id: d.id })} onDone=${onChanged} />
            <${ActionButton} label="Export refresh file" action=${() => gql(EXPORT, { id: d.id })}
              onDone=${(result) => setFile({ deviceId: d.id, text: result.exportLicenseFile })} />`}</td>` : ''}
        </tr>`;
      })}</tbody>
    </table>` : ''}
    ${connection && (cursors.length > 1 || connection.pageInfo.hasNextPage) ? html`<nav class="pager" aria-label="Device pages">
      <button type="button" class="quiet" disabled=${cursors.length === 1} onClick=${() => setCursors(cursors.slice(0, -1))}>Previous devices</button>
      <button type="button" class="quiet" disabled=${!connection.pageInfo.hasNextPage}
        onClick=${() => setCursors([...cursors, connection.pageInfo.endCursor])}>Next devices</button>
    </nav>` : ''}
    ${file ? html`<${RefreshFile} file=${file.text} deviceId=${file.deviceId} onClose=${() => setFile(null)} />` : ''}
  </section>`;
}

function Usage({ license }) {
  if (license.usage.length === 0) return null;
  return html`<section aria-labelledby="usage-title">
    <h2 id="usage-title">Usage</h2>
    ${license.usage.map((u) => html`<article class="card meter" key=${u.meter} aria-label=${`meter ${u.meter}`}>
      <h3>${u.meter}</h3>
      <p><strong>${u.used}</strong>${u.limit === null ? ' used (no limit)' : ` of ${u.limit} used`}
        ${u.overageUsed ? html`, <strong>${u.overageUsed}</strong> overage` : ''}
        ${u.periodStart ? html` <span class="muted">in ${date(u.periodStart)} to ${date(u.periodEnd)}</span>` : ''};
        <span class="muted"> ${u.lifetimeUsed} all time</span></p>
      <${UsageChart} licenseId=${license.id} meter=${u.meter} />
    </article>`)}
  </section>`;
}

function Audit({ events }) {
  return html`<section aria-labelledby="audit-title">
    <h2 id="audit-title">Audit trail</h2>
    ${events.length === 0 ? html`<p class="empty">No changes recorded.</p>` : html`<table class="list">
      <thead><tr><th scope="col">When</th><th scope="col">Who</th><th scope="col">What</th><th scope="col">Change</th></tr></thead>
      <tbody>${events.map((e) => html`<tr key=${e.id}>
        <td>${date(e.createdAt)}</td><td>${e.actorLabel}</td><td><code>${e.action}</code></td>
        <td><details><summary>diff</summary><pre>${json(e.diff)}</pre></details></td></tr>`)}</tbody>
    </table>`}
  </section>`;
}

export function LicensePage({ id, role }) {
  const [round, setRound] = useState(0);
  const { data, error } = useQuery(LICENSE, { id, target: id }, round);
  const reload = () => setRound((r) => r + 1);
  if (error) return html`<${ErrorText} error=${error} />`;
  if (!data) return html`<p class="loading">Loading...</p>`;
  const license = data.license;
  if (!license) return html`<p class="error" role="alert">No such license.</p>`;
  return html`<article aria-labelledby="license-title">
    <p><a href="#/licenses">\u2190 Licenses</a></p>
    <h1 id="license-title"><code>${license.key}</code> <${Badge} value=${license.status} /></h1>
    ${license.statusReason ? html`<p class="muted">Reason: ${license.statusReason}</p>` : ''}
    <dl class="facts">
      <div><dt>Customer</dt><dd>${license.customer ? license.customer.name : '\u2014'}</dd></div>
      <div><dt>Product / policy</dt><dd>${license.product.name} / ${license.policy.name}</dd></div>
      <div><dt>Activations</dt><dd><${Activations} used=${license.activeDevices} max=${license.maxActivations} /></dd></div>
      <div><dt>Issued</dt><dd>${date(license.issuedAt)}</dd></div>
      <div><dt>Expires</dt><dd>${license.expiresAt ? date(license.expiresAt) : 'never'}</dd></div>
      <div><dt>Entitlements</dt><dd>${license.entitlements.join(', ') || '\u2014'}</dd></div>
      <div><dt>File version</dt><dd>${license.version}</dd></div>
    </dl>
    <${Actions} license=${license} role=${role} onChanged=${reload} />
    <${Usage} license=${license} />
    <${Devices} license=${license} role=${role} round=${round} onChanged=${reload} />
    <${Audit} events=${data.auditEvents.nodes} />
  </article>`;
}
