"""stacklab's Python runtime: the users API over REST and GraphQL on each session's own
database and cache, with the password storage and encryption at rest the session chose.

It is the Flask twin of the Rust runtime (``backends/rust``); ``backends/CONTRACT.md`` is what
both must do, byte for byte where storage is concerned.

Layout:

- :mod:`.app`: the application factory (blueprints, error handlers, timing headers).
- :mod:`.api`: the blueprints — users REST, GraphQL, cache, analysis, internal, health.
- :mod:`.body`: JSON bodies read and checked field by field.
- :mod:`.service`: the users service both REST and GraphQL call (cache first, then database).
- :mod:`.sessions`: which sessions are open in this instance and where descriptors come from.
- :mod:`.storage`: SQLite / PostgreSQL / MySQL and MongoDB; :mod:`.cache`: the cache engines.
- :mod:`.passwords`, :mod:`.crypto`: the five password modes, AES-256-GCM and blind indexes.
- :mod:`.gql`: the GraphQL schema and its depth, complexity and field limits.
- :mod:`.analysis`: size, rows and the benchmark.
- :mod:`.config`, :mod:`.errors`: limits and the API error type.
- :mod:`.server`: the process — arguments, the credential on stdin, waitress, shutdown.
"""
