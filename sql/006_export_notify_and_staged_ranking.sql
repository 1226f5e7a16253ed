-- Issue 9, items 3 and 4. Idempotent; recorded in hub.schema_migrations.

-- exports.notify_error: why the last `learning_exported` announcement of the cycle failed (NULL:
-- none failed, or a later one succeeded). A failed announcement never changes `status`: the branch
-- and PR are made; the announcement stays pending (notified_sha differs) and the next run of the
-- cycle sends it.
ALTER TABLE hub.exports ADD COLUMN IF NOT EXISTS notify_error text;
