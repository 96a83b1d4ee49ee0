package stacklab.http;

import java.nio.charset.StandardCharsets;

/** GraphiQL, served on GET /graphql. */
final class Graphiql {
    private Graphiql() {}

    static final byte[] PAGE = """
<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>GraphiQL — stacklab (Java)</title>
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <link rel="stylesheet" href="https://unpkg.com/graphiql/graphiql.min.css">
  <style>body { margin: 0; height: 100vh; } #graphiql { height: 100vh; }</style>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script crossorigin src="https://unpkg.com/react/umd/react.production.min.js"></script>
  <script crossorigin src="https://unpkg.com/react-dom/umd/react-dom.production.min.js"></script>
  <script crossorigin src="https://unpkg.com/graphiql/graphiql.min.js"></script>
  <script>
    const fetcher = GraphiQL.createFetcher({ url: "/graphql" });
    ReactDOM.render(React.createElement(GraphiQL, { fetcher }), document.getElementById("graphiql"));
  </script>
</body>
</html>
""".getBytes(StandardCharsets.UTF_8);
}
