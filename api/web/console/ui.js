// Shared pieces of every page: the `html` tag (htm over preact), the role table, data loading,
// action buttons and the activation bar.

import { h } from 'preact';
import { useCallback, useEffect, useState } from 'preact/hooks';
import htm from 'htm';

import { gql } from './api.js';

export const html = htm.bind(h);

/**
 * What each role may do, as domain/src/actor.rs `allows` says (the API decides; the console
 * only leaves out the buttons a role cannot use).
 */
const CAPABILITIES = {
  support: ['OWNER', 'ADMIN', 'SUPPORT', 'INTEGRATION'],
  manageLicenses: ['OWNER', 'ADMIN', 'INTEGRATION'],
  reviewUsage: ['OWNER', 'ADMIN', 'SUPPORT'],
};

/** Whether `role` may use `capability` (`support`, `manageLicenses`, `reviewUsage`). */
export function can(role, capability) {
  return CAPABILITIES[capability].includes(role);
}

/**
 * Runs `query` with `variables` when they (or `refresh`, a counter a page bumps after a change)
 * change: `{ data, error, loading, reload }`.
 */
export function useQuery(query, variables, refresh = 0) {
  const key = JSON.stringify(variables);
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const [round, setRound] = useState(0);
  useEffect(() => {
    let current = true;
    setState((s) => ({ ...s, loading: true }));
    gql(query, variables).then(
      (data) => current && setState({ data, error: null, loading: false }),
      (error) => current && setState({ data: null, error, loading: false }),
    );
    return () => { current = false; };
  }, [query, key, round, refresh]);
  const reload = useCallback(() => setRound((r) => r + 1), []);
  return { ...state, reload };
}

/** The error of a failed call, with its code, announced to screen readers. */
export function ErrorText({ error }) {
  if (!error) return null;
  return html`<p class="error" role="alert">${error.message}${error.code ? html` <code>${error.code}</code>` : ''}</p>`;
}

/**
 * A button that runs `action` (a promise) once at a time, shows "..." meanwhile and reports
 * a refusal next to itself; `onDone(result)` runs after success.
 */
export function ActionButton({ label, action, onDone, kind = '', disabled = false }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = async () => {
    setBusy(true);
    setError(null);
    try {
      const result = await action();
      setBusy(false);
      if (onDone) onDone(result);
    } catch (err) {
      setBusy(false);
      setError(err);
    }
  };
  return html`<span class="action">
    <button type="button" class=${kind} onClick=${run} disabled=${busy || disabled} data-action=${label}>
      ${busy ? `${label}...` : label}
    </button>
    <${ErrorText} error=${error} />
  </span>`;
}

/** "37/100" with a bar; "37/unlimited" without a cap. */
export function Activations({ used, max }) {
  if (max === null || max === undefined) {
    return html`<span class="activations"><span class="count">${used}/unlimited</span></span>`;
  }
  const percent = max > 0 ? Math.min(100, Math.round((used * 100) / max)) : 100;
  const level = percent >= 100 ? 'full' : percent >= 80 ? 'high' : '';
  return html`<span class="activations">
    <span class="count">${used}/${max}</span>
    <span class=${`bar ${level}`} role="progressbar" aria-label="activations"
      aria-valuemin="0" aria-valuemax=${max} aria-valuenow=${used} aria-valuetext=${`${used} of ${max} seats`}>
      <span class="fill" style=${`width: ${percent}%`}></span>
    </span>
  </span>`;
}

/** A status word as a coloured badge. */
export function Badge({ value }) {
  return html`<span class=${`badge badge-${String(value).toLowerCase()}`}>${String(value).replaceAll('_', ' ')}</span>`;
}
