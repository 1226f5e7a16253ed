-- Operations: queue statistics history and the dead-letter audit trail. Idempotent.

-- One row per queue per `queue_statistics` run (hourly). Pruned by retention after
-- SHARED_QUEUE_RETENTION_DAYS. Ages and latencies in seconds; the window is the hour before measured_at.
CREATE TABLE IF NOT EXISTS hub.queue_statistics (
    measured_at      timestamptz NOT NULL,
    queue            text        NOT NULL,
    kind             text        NOT NULL,  -- request_reply | hub | inbox | dlq | other
    depth            bigint      NOT NULL,  -- live messages
    visible          bigint      NOT NULL,  -- live messages a read would get now (vt passed)
    oldest_age_s     double precision,      -- age of the oldest live message (NULL when empty)
    in_window        bigint      NOT NULL,  -- messages enqueued in the window (live + archived)
    out_window       bigint      NOT NULL,  -- messages archived in the window
    latency_p50_s    double precision,      -- enqueue -> archive, over messages archived in the window
    latency_p95_s    double precision,
    latency_p99_s    double precision,
    read_ct_0        bigint      NOT NULL,  -- over live + archived-in-window messages: never read
    read_ct_1        bigint      NOT NULL,  -- delivered once
    read_ct_2        bigint      NOT NULL,  -- redelivered once
    read_ct_3_plus   bigint      NOT NULL,  -- redelivered two or more times
    max_read_ct      integer     NOT NULL,
    dlq_depth        bigint,                -- live messages in <queue>_dlq (NULL: the queue has none)
    window_s         integer     NOT NULL,
    PRIMARY KEY (measured_at, queue)
);
CREATE INDEX IF NOT EXISTS queue_statistics_queue ON hub.queue_statistics (queue, measured_at DESC);

-- What people did to dead letters (CLI `queue-assets dlq redrive|purge`, job `dlq_redrive_job`).
-- Written in the same transaction as the move itself, so the trail is exact.
CREATE TABLE IF NOT EXISTS hub.dlq_actions (
    id               bigserial   PRIMARY KEY,
    action           text        NOT NULL CHECK (action IN ('redrive', 'purge')),
    dlq              text        NOT NULL,
    dlq_msg_id       bigint      NOT NULL,
    source_queue     text,
    original_msg_id  bigint,                -- the msg_id the message had on its source queue
    new_msg_id       bigint,                -- redrive: its msg_id on the source queue now
    reason_kind      text,
    acted_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor            text        NOT NULL
);
CREATE INDEX IF NOT EXISTS dlq_actions_dlq_msg ON hub.dlq_actions (dlq, dlq_msg_id);
CREATE INDEX IF NOT EXISTS dlq_actions_acted_at ON hub.dlq_actions (acted_at);
