-- Queue incarnations: pgmq numbers a queue's messages from 1 again when the queue is dropped and
-- created anew, so (queue, msg_id) alone took every message of the new queue for one already taken
-- and archived it without its data. pgmq records when each queue was created (pgmq.meta.created_at):
-- the ledger and the data tables now key on (queue, queue_created_at, msg_id).
-- 'epoch' stands for "an earlier incarnation, gone": rows that were taken from a queue before its
-- current incarnation was created, and rows written by hand without one. Idempotent.

ALTER TABLE hub.ingest_ledger        ADD COLUMN IF NOT EXISTS queue_created_at timestamptz NOT NULL DEFAULT 'epoch';
ALTER TABLE hub.pattern_observations ADD COLUMN IF NOT EXISTS queue_created_at timestamptz NOT NULL DEFAULT 'epoch';
ALTER TABLE hub.code_analyses        ADD COLUMN IF NOT EXISTS queue_created_at timestamptz NOT NULL DEFAULT 'epoch';
ALTER TABLE hub.learned_artifacts    ADD COLUMN IF NOT EXISTS queue_created_at timestamptz NOT NULL DEFAULT 'epoch';
ALTER TABLE hub.heartbeats           ADD COLUMN IF NOT EXISTS queue_created_at timestamptz NOT NULL DEFAULT 'epoch';

-- Backfill the ledger: a message enqueued since its queue's current incarnation was created belongs
-- to it; an older one stays at 'epoch' (its msg_id may come round again in the current queue).
UPDATE hub.ingest_ledger l
   SET queue_created_at = m.created_at
  FROM pgmq.meta m
 WHERE m.queue_name = l.queue
   AND l.queue_created_at = 'epoch'
   AND l.enqueued_at >= m.created_at;

-- Backfill the data rows from their message's ledger row. Before this migration (queue, msg_id) was
-- unique in the ledger; a data row whose message still has an 'epoch' ledger row stays with it.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['pattern_observations', 'code_analyses', 'learned_artifacts', 'heartbeats'] LOOP
        EXECUTE format(
            'UPDATE hub.%I d SET queue_created_at = l.queue_created_at'
            '  FROM hub.ingest_ledger l'
            ' WHERE l.queue = d.queue AND l.msg_id = d.msg_id AND l.outcome = ''stored'''
            '   AND d.queue_created_at = ''epoch'' AND l.queue_created_at <> ''epoch'''
            '   AND NOT EXISTS (SELECT 1 FROM hub.ingest_ledger o WHERE o.queue = d.queue AND o.msg_id = d.msg_id'
            '                   AND o.queue_created_at = ''epoch'' AND o.outcome = ''stored'')',
            t);
    END LOOP;
END $$;

-- The primary keys take the incarnation in (before the msg_id, so a lookup by queue and incarnation
-- stays an index range).
DO $$
DECLARE
    spec text[];
    pk   name;
BEGIN
    FOREACH spec SLICE 1 IN ARRAY ARRAY[
        ['ingest_ledger',        'queue, queue_created_at, msg_id'],
        ['pattern_observations', 'queue, queue_created_at, msg_id, ordinal'],
        ['code_analyses',        'queue, queue_created_at, msg_id'],
        ['learned_artifacts',    'queue, queue_created_at, msg_id, ordinal'],
        ['heartbeats',           'queue, queue_created_at, msg_id']
    ] LOOP
        SELECT c.conname INTO pk
          FROM pg_constraint c
         WHERE c.conrelid = format('hub.%I', spec[1])::regclass AND c.contype = 'p'
           AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                            WHERE a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
                              AND a.attname = 'queue_created_at');
        IF pk IS NOT NULL THEN
            EXECUTE format('ALTER TABLE hub.%I DROP CONSTRAINT %I, ADD PRIMARY KEY (%s)', spec[1], pk, spec[2]);
        END IF;
    END LOOP;
END $$;

COMMENT ON COLUMN hub.ingest_ledger.queue_created_at IS
    'the incarnation of the queue the message was read from (pgmq.meta.created_at); epoch (1970-01-01): an earlier one';
