// Starts GraphiQL (the vendored UMD build) against this server: queries and mutations are POSTed
// to /graphql, subscriptions go over /graphql/ws (graphql-transport-ws). A browser cannot set
// headers on a websocket, so the Authorization typed in the headers editor travels in the
// connection_init payload, where the server reads it; one socket per Authorization value.
(function () {
  'use strict';
  var origin = window.location.origin;
  var httpUrl = origin + '/graphql';
  var wsUrl = origin.replace(/^http/, 'ws') + '/graphql/ws';
  var fetchers = {};

  function authorization(headers) {
    if (!headers) return '';
    return headers.Authorization || headers.authorization || '';
  }

  function fetcher(params, options) {
    var auth = authorization(options && options.headers);
    if (!fetchers[auth]) {
      fetchers[auth] = GraphiQL.createFetcher({
        url: httpUrl,
        subscriptionUrl: wsUrl,
        wsConnectionParams: auth ? { Authorization: auth } : {},
      });
    }
    return fetchers[auth](params, options);
  }

  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: true,
    })
  );
})();
