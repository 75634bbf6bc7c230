// Licenses: search and filter (status, product, customer, expiring before), each with its
// activations ("37/100" and a bar), status and expiry; pages of 25 by cursor.

import { useState } from 'preact/hooks';

import { html, Activations, Badge, ErrorText, useQuery } from '../ui.js';
import { date } from '../format.js';

const CHOICES = `{ products(first: 100) { nodes { id name } } customers(first: 100) { nodes { id name } } }`;
const LIST = `query($filter: LicenseFilter, $after: String) {
  licenses(first: 25, after: $after, filter: $filter) { totalCount pageInfo { hasNextPage endCursor }
    nodes { id key status expiresAt activeDevices maxActivations
      product { name } policy { name } customer { name } } } }`;
const STATUSES = ['ACTIVE', 'SUSPENDED', 'REVOKED', 'EXPIRED'];

function filterOf(form) {
  const filter = {};
  if (form.search.trim()) filter.search = form.search.trim();
  if (form.status) filter.status = form.status;
  if (form.productId) filter.productId = form.productId;
  if (form.customerId) filter.customerId = form.customerId;
  if (form.expiresBefore) filter.expiresBefore = new Date(`${form.expiresBefore}T00:00:00Z`).toISOString();
  return filter;
}

const EMPTY = { search: '', status: '', productId: '', customerId: '', expiresBefore: '' };

export function Licenses() {
  const choices = useQuery(CHOICES, {});
  const [form, setForm] = useState(EMPTY);
  const [filter, setFilter] = useState({});
  const [cursors, setCursors] = useState([null]);
  const { data, error, loading } = useQuery(LIST, { filter, after: cursors[cursors.length - 1] });
  const field = (name) => (e) => setForm({ ...form, [name]: e.target.value });
  const apply = (e) => {
    e.preventDefault();
    setFilter(filterOf(form));
    setCursors([null]);
  };
  const page = data && data.licenses;
  return html`<section aria-labelledby="licenses-title">
    <h1 id="licenses-title">Licenses</h1>
    <form class="filters" onSubmit=${apply} role="search" aria-label="Filter licenses">
      <div><label for="f-search">Search</label>
        <input id="f-search" type="search" value=${form.search} onInput=${field('search')} placeholder="key, customer, product" /></div>
      <div><label for="f-status">Status</label>
        <select id="f-status" value=${form.status} onChange=${field('status')}>
          <option value="">any</option>${STATUSES.map((s) => html`<option value=${s}>${s.toLowerCase()}</option>`)}
        </select></div>
      <div><label for="f-product">Product</label>
        <select id="f-product" value=${form.productId} onChange=${field('productId')}>
          <option value="">any</option>
          ${choices.data && choices.data.products.nodes.map((p) => html`<option value=${p.id}>${p.name}</option>`)}
        </select></div>
      <div><label for="f-customer">Customer</label>
        <select id="f-customer" value=${form.customerId} onChange=${field('customerId')}>
          <option value="">any</option>
          ${choices.data && choices.data.customers.nodes.map((c) => html`<option value=${c.id}>${c.name}</option>`)}
        </select></div>
      <div><label for="f-expires">Expiring before</label>
        <input id="f-expires" type="date" value=${form.expiresBefore} onInput=${field('expiresBefore')} /></div>
      <div class="buttons"><button type="submit">Apply</button>
        <button type="button" class="quiet" onClick=${() => { setForm(EMPTY); setFilter({}); setCursors([null]); }}>Clear</button></div>
    </form>
    <${ErrorText} error=${error} />
    ${page ? html`<p class="muted" aria-live="polite">${page.totalCount} license${page.totalCount === 1 ? '' : 's'}${loading ? ' (loading...)' : ''}</p>
    <table class="list" aria-describedby="licenses-title">
      <thead><tr><th scope="col">Key</th><th scope="col">Customer</th><th scope="col">Product / policy</th>
        <th scope="col">Status</th><th scope="col">Activations</th><th scope="col">Expires</th></tr></thead>
      <tbody>${page.nodes.map((l) => html`<tr key=${l.id} data-license=${l.id}>
        <td><a href=${`#/licenses/${l.id}`}><code>${l.key}</code></a></td>
        <td>${l.customer ? l.customer.name : '\u2014'}</td>
        <td>${l.product.name} <span class="muted">/ ${l.policy.name}</span></td>
        <td><${Badge} value=${l.status} /></td>
        <td><${Activations} used=${l.activeDevices} max=${l.maxActivations} /></td>
        <td>${l.expiresAt ? date(l.expiresAt) : 'never'}</td>
      </tr>`)}</tbody>
    </table>
    <nav class="pager" aria-label="Pages">
      <button type="button" class="quiet" disabled=${cursors.length === 1} onClick=${() => setCursors(cursors.slice(0, -1))}>Previous page</button>
      <button type="button" class="quiet" disabled=${!page.pageInfo.hasNextPage}
        onClick=${() => setCursors([...cursors, page.pageInfo.endCursor])}>Next page</button>
    </nav>` : ''}
  </section>`;
}
