// Sign in with a staff email and password (`login`) or with an API token.

import { useState } from 'preact/hooks';

import { gql, setToken } from '../api.js';
import { html, ErrorText } from '../ui.js';

const LOGIN = `mutation($email: String!, $password: String!) { login(email: $email, password: $password) { token } }`;

export function SignIn({ error: initialError, onSignedIn }) {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [apiToken, setApiToken] = useState('');
  const [error, setError] = useState(initialError);
  const [busy, setBusy] = useState(false);

  const withPassword = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const data = await gql(LOGIN, { email, password });
      setToken(data.login.token);
      onSignedIn();
    } catch (err) {
      setError(err);
    }
    setBusy(false);
  };

  const withToken = (event) => {
    event.preventDefault();
    setToken(apiToken.trim());
    onSignedIn();
  };

  return html`<main class="signin">
    <h1>licensing console</h1>
    <${ErrorText} error=${error} />
    <form onSubmit=${withPassword} aria-labelledby="signin-password">
      <h2 id="signin-password">Sign in</h2>
      <label for="email">Email</label>
      <input id="email" type="email" autocomplete="username" required value=${email}
        onInput=${(e) => setEmail(e.target.value)} />
      <label for="password">Password</label>
      <input id="password" type="password" autocomplete="current-password" required value=${password}
        onInput=${(e) => setPassword(e.target.value)} />
      <button type="submit" disabled=${busy}>${busy ? 'Signing in...' : 'Sign in'}</button>
    </form>
    <form onSubmit=${withToken} aria-labelledby="signin-token">
      <h2 id="signin-token">Or use an API token</h2>
      <label for="api-token">API token</label>
      <input id="api-token" type="password" autocomplete="off" required value=${apiToken}
        onInput=${(e) => setApiToken(e.target.value)} />
      <button type="submit">Use token</button>
    </form>
  </main>`;
}
