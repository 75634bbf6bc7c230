// The console's only way to the server: GraphQL over POST /graphql and the `alerts`
// subscription over /graphql/ws (graphql-transport-ws), both with the caller's bearer token
// (a staff session from `login`, or an API token), kept in sessionStorage for this tab.

const TOKEN_KEY = 'licensing.console.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** A GraphQL error as the API sent it: `code` is `errors[0].extensions.code`. */
export class ApiError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

/** Runs one operation; resolves to `data`, rejects with an ApiError. */
export async function gql(query, variables = {}) {
  const headers = { 'content-type': 'application/json' };
  const bearer = token();
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  let response;
  try {
    response = await fetch('/graphql', { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  } catch (err) {
    throw new ApiError('The server cannot be reached.', 'NETWORK');
  }
  const body = await response.json().catch(() => null);
  if (!body) throw new ApiError(`The server answered ${response.status}.`, 'INTERNAL');
  if (body.errors && body.errors.length) {
    const [first] = body.errors;
    throw new ApiError(first.message, first.extensions && first.extensions.code);
  }
  return body.data;
}

const ALERTS = `subscription { alerts { id kind message createdAt acknowledgedAt license { id key } } }`;

/**
 * Subscribes to new alerts. `onAlert(alert)` runs for each one, `onState('live' | 'connecting'
 * | 'closed', reason)` when the socket changes; a dropped socket is re-opened after a pause that
 * doubles up to 30 s. Returns a function that stops it.
 */
export function subscribeAlerts(onAlert, onState) {
  let socket = null;
  let stopped = false;
  let pause = 1000;
  let timer = null;

  function open() {
    onState('connecting');
    const url = `${location.origin.replace(/^http/, 'ws')}/graphql/ws`;
    socket = new WebSocket(url, 'graphql-transport-ws');
    socket.onopen = () => {
      socket.send(JSON.stringify({ type: 'connection_init', payload: { Authorization: `Bearer ${token()}` } }));
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === 'connection_ack') {
        pause = 1000;
        socket.send(JSON.stringify({ id: 'alerts', type: 'subscribe', payload: { query: ALERTS } }));
        onState('live');
      } else if (message.type === 'next' && message.payload.data) {
        onAlert(message.payload.data.alerts);
      } else if (message.type === 'ping') {
        socket.send(JSON.stringify({ type: 'pong' }));
      } else if (message.type === 'error') {
        onState('closed', message.payload.map((e) => e.message).join('; '));
      }
    };
    socket.onclose = (event) => {
      if (stopped) return;
      onState('closed', event.reason || `closed (${event.code})`);
      timer = setTimeout(open, pause);
      pause = Math.min(pause * 2, 30000);
    };
  }

  open();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (socket) socket.close(1000, 'page left');
  };
}
