// The console's shell: who is signed in (`viewer`), the navigation, and the page for the
// location's hash (#/alerts, #/anomalies, #/licenses, #/licenses/<id>, #/billing).

import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';

import { gql, setToken, token } from './api.js';
import { html, ErrorText } from './ui.js';
import { SignIn } from './pages/signin.js';
import { Alerts } from './pages/alerts.js';
import { Anomalies } from './pages/anomalies.js';
import { Licenses } from './pages/licenses.js';
import { LicensePage } from './pages/license.js';
import { Billing } from './pages/billing.js';

const VIEWER = `{ viewer { role label actorKind vendor { name } } }`;

const PAGES = [
  ['alerts', 'Alerts'],
  ['anomalies', 'Anomalies'],
  ['licenses', 'Licenses'],
  ['billing', 'Billing drift'],
];

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  return parts.length ? parts : ['alerts'];
}

function Page({ path, viewer }) {
  const [name, id] = path;
  const role = viewer.role;
  if (name === 'anomalies') return html`<${Anomalies} role=${role} />`;
  if (name === 'licenses' && id) return html`<${LicensePage} id=${id} role=${role} />`;
  if (name === 'licenses') return html`<${Licenses} />`;
  if (name === 'billing') return html`<${Billing} />`;
  return html`<${Alerts} role=${role} />`;
}

function App() {
  const [viewer, setViewer] = useState(null);
  const [error, setError] = useState(null);
  const [signedIn, setSignedIn] = useState(Boolean(token()));
  const [path, setPath] = useState(route());

  useEffect(() => {
    const onHash = () => setPath(route());
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  useEffect(() => {
    if (!signedIn) return;
    gql(VIEWER).then(
      (data) => setViewer(data.viewer),
      (err) => {
        setToken(null);
        setSignedIn(false);
        setError(err);
      },
    );
  }, [signedIn]);

  useEffect(() => {
    const [name] = path;
    const label = (PAGES.find(([p]) => p === name) || [null, 'License'])[1];
    document.title = `${label} - licensing console`;
  }, [path]);

  const signOut = async () => {
    if (viewer && viewer.actorKind === 'STAFF') await gql('mutation { logout }').catch(() => null);
    setToken(null);
    setViewer(null);
    setSignedIn(false);
  };

  if (!signedIn) {
    return html`<${SignIn} error=${error} onSignedIn=${() => { setError(null); setSignedIn(true); }} />`;
  }
  if (!viewer) return html`<p class="loading">Signing in...</p><${ErrorText} error=${error} />`;
  return html`
    <header class="top">
      <a class="brand" href="#/alerts">licensing</a>
      <nav aria-label="Console pages">
        ${PAGES.map(([p, label]) => html`<a href=${`#/${p}`} aria-current=${path[0] === p ? 'page' : undefined}>${label}</a>`)}
        <a href="/graphql">GraphiQL</a>
      </nav>
      <span class="who">
        <span>${viewer.label} \u00b7 ${viewer.vendor.name}</span>
        <span class="role" data-role=${viewer.role}>${viewer.role}</span>
        <button type="button" class="quiet" onClick=${signOut}>Sign out</button>
      </span>
    </header>
    <main id="main"><${Page} path=${path} viewer=${viewer} /></main>`;
}

const root = document.getElementById('app');
root.textContent = '';
render(html`<${App} />`, root);
