"""`queue-assets`, the command line: one package for every subcommand.

- `app`: the parser, `main()` and the hub's own commands (`init`, `settings`, `simulate`, `ingest`,
  `dev`, `stop`);
- `ops`: the operator's commands (`status`, `retention`, `dlq ...`);
- `roles`: producer roles (`grant-instance`, `revoke-instance`; the SQL lives in `queue_assets.security`);
- `errors`: `fail`, how every command reports an error.

The package sits on top: it imports the rest of `queue_assets`, nothing imports it. Heavy
dependencies (Dagster, pandas, Git, the pgmq client) are imported inside the commands that use
them, so `queue-assets --help` and `queue-assets status` start fast (docs/benchmarks.md).
"""

from .app import main

__all__ = ["main"]
