"""How long a producer may keep retrying one send: the constants the SDK's backoff, its connection
pool and the ingest ledger's retention floor must agree on. No imports, so every layer can use them."""

# The SDK's retry loop gives up on a send after this long (`backoff.SDK_BACKOFF`).
SDK_SEND_DEADLINE_S = 20.0
# How long an SDK attempt may wait for a pooled connection (`db.make_pgmq`) before it sends.
SDK_POOL_WAIT_S = 30.0
# The latest a retried SDK send can enqueue a copy of a message, counted from the first attempt: the
# last retry starts inside the deadline and may then wait for a connection. The hub's ingest ledger
# must remember a keyed message at least this long (plus the visibility timeout) to drop the copy.
SDK_RETRY_HORIZON_S = SDK_SEND_DEADLINE_S + SDK_POOL_WAIT_S
