-- A hit of hub_api.query_pattern is a lookup (issue 11: at most 1.5x a plain indexed SELECT).
-- Idempotent. docs/patterns.md, "How a hit is answered".
--
-- hub.patterns.entry holds the JSON that hub_api.query_pattern returns for the key (sql/015's
-- document, timestamps rendered in UTC). It is kept by triggers, so every writer keeps it without
-- knowing it exists (ingest's hub.catalogue_observe, the enrichment and approval updates in Python,
-- hub.catalogue_refresh_ranks, anything an operator runs):
--   * BEFORE INSERT OR UPDATE on hub.patterns, per row: entry := hub.pattern_entry(NEW), computed
--     from the new row and the key's aliases as they are at that moment. Whatever a statement writes
--     into entry itself is replaced (a change of only the per-batch counters or the rank patches
--     those keys, see below), and NOT NULL holds because the trigger always sets it;
--   * AFTER INSERT / UPDATE / DELETE on hub.pattern_aliases, per statement: for the keys of the
--     changed aliases, the rows whose stored alias list is no longer the fresh one are updated (which
--     fires the trigger above). Every touched key is locked first, in key order, like
--     hub.catalogue_observe's own step 3 and hub.catalogue_refresh_ranks, so concurrent ingests
--     still lock in one order and cannot deadlock.
-- The entry shows only hub.patterns columns and the aliases, so these two triggers cover every change.

-- A timestamp as to_jsonb renders it in a session whose TimeZone is UTC ("2026-12-03T07:19:23.44656+00:00"),
-- whatever the session's zone: the timestamp's UTC wall time, as to_jsonb renders a timestamp without
-- time zone, plus "+00:00". (A SET TimeZone clause on hub.pattern_entry did the same at 5-25 us a call more.)
-- Infinite and BC values, which no catalogue row holds, keep to_jsonb's own rendering.
CREATE OR REPLACE FUNCTION hub.utc_jsonb(t timestamptz) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN isfinite(t) AND t >= timestamptz '0001-01-01 00:00:00+00'
                THEN to_jsonb((to_jsonb(t AT TIME ZONE 'UTC') #>> '{}') || '+00:00')
                ELSE to_jsonb(t) END
$$;

-- The answer for one catalogue row: exactly sql/015's jsonb_build_object, timestamps in UTC.
CREATE OR REPLACE FUNCTION hub.pattern_entry(p hub.patterns) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN jsonb_build_object(
        'status', p.status, 'pattern_type', p.pattern_type, 'name', p.canonical_name,
        'display_name', p.display_name,
        'aliases', to_jsonb(ARRAY(SELECT a.name FROM hub.pattern_aliases a
                                  WHERE a.pattern_type = p.pattern_type
                                    AND a.canonical_name = p.canonical_name
                                  ORDER BY a.observations DESC, a.name LIMIT 20)),
        'instances', p.instances, 'observations', p.observations, 'confidence', p.confidence,
        'confidence_instances', p.confidence_instances, 'languages', p.languages,
        'top_indicators', p.top_indicators, 'examples', p.examples,
        'first_seen', hub.utc_jsonb(p.first_seen), 'last_seen', hub.utc_jsonb(p.last_seen),
        'rank', p.rank, 'version', p.version,
        'enrichment', p.enrichment, 'enrichment_error', p.enrichment_error,
        'broadcast_provisional', p.broadcast_provisional,
        'approval', p.approval, 'reviewed_by', p.reviewed_by, 'review_reason', p.review_reason,
        'reviewed_at', hub.utc_jsonb(p.reviewed_at),
        'provenance', CASE WHEN p.enriched_at IS NULL THEN NULL ELSE jsonb_build_object(
            'provider', p.enrichment_provider, 'model', p.enrichment_model,
            'request_id', p.enrichment_request_id, 'enriched_at', hub.utc_jsonb(p.enriched_at)) END);
END
$$;

-- The timestamps of an entry rendered in the caller's time zone (hub_api.query_pattern merges them
-- into the stored entry when the session is not in UTC, so the answer stays what sql/015 returned).
CREATE OR REPLACE FUNCTION hub.pattern_entry_times(p hub.patterns) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN jsonb_build_object(
        'first_seen', p.first_seen, 'last_seen', p.last_seen, 'reviewed_at', p.reviewed_at,
        'provenance', CASE WHEN p.enriched_at IS NULL THEN NULL ELSE jsonb_build_object(
            'provider', p.enrichment_provider, 'model', p.enrichment_model,
            'request_id', p.enrichment_request_id, 'enriched_at', p.enriched_at) END);
END
$$;

ALTER TABLE hub.patterns ADD COLUMN IF NOT EXISTS entry jsonb;

-- A change of only the counters that move with every batch or hour (observations, last_seen,
-- confidence: ingest; rank: hub.catalogue_refresh_ranks, up to every row) patches them into the
-- stored entry instead of rebuilding it: the same values jsonb_build_object puts there, so the entry
-- stays identical to a rebuilt one. Safe because the stored entry is current for the old row: every
-- other column the entry shows is compared here, and alias changes rebuild it (they set entry to
-- NULL, which is never equal). A column added to hub.pattern_entry must be added here too.
-- (Measured: 100,000 rank changes 2.7-4.3 s without the trigger, 10.2-14.0 s rebuilding each
-- entry, 3.2 s patching; ingest: bench/bench_catalogue_observe.py.)
CREATE OR REPLACE FUNCTION hub.patterns_keep_entry() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.entry IS NOT NULL AND NEW.entry = OLD.entry
       AND (NEW.status, NEW.pattern_type, NEW.canonical_name, NEW.display_name, NEW.instances,
            NEW.confidence_instances, NEW.languages, NEW.top_indicators, NEW.examples,
            NEW.first_seen, NEW.version, NEW.enrichment, NEW.enrichment_error,
            NEW.broadcast_provisional, NEW.approval, NEW.reviewed_by, NEW.review_reason,
            NEW.reviewed_at, NEW.enrichment_provider, NEW.enrichment_model,
            NEW.enrichment_request_id, NEW.enriched_at)
           IS NOT DISTINCT FROM
           (OLD.status, OLD.pattern_type, OLD.canonical_name, OLD.display_name, OLD.instances,
            OLD.confidence_instances, OLD.languages, OLD.top_indicators, OLD.examples,
            OLD.first_seen, OLD.version, OLD.enrichment, OLD.enrichment_error,
            OLD.broadcast_provisional, OLD.approval, OLD.reviewed_by, OLD.review_reason,
            OLD.reviewed_at, OLD.enrichment_provider, OLD.enrichment_model,
            OLD.enrichment_request_id, OLD.enriched_at) THEN
        IF (NEW.observations, NEW.last_seen, NEW.confidence, NEW.rank)
           IS DISTINCT FROM (OLD.observations, OLD.last_seen, OLD.confidence, OLD.rank) THEN
            NEW.entry := OLD.entry || jsonb_build_object(
                'observations', NEW.observations, 'last_seen', hub.utc_jsonb(NEW.last_seen),
                'confidence', NEW.confidence, 'rank', NEW.rank);
        END IF;
    ELSE
        NEW.entry := hub.pattern_entry(NEW);
    END IF;
    RETURN NEW;
END
$$;

-- Refresh the entries of these keys whose alias list changed; every key is locked first, in key order.
CREATE OR REPLACE FUNCTION hub.pattern_entries_refresh_aliases(types text[], names text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM hub.patterns p JOIN unnest(types, names) AS k(t, n)
        ON p.pattern_type = k.t AND p.canonical_name = k.n
    ORDER BY p.pattern_type, p.canonical_name FOR UPDATE OF p;
    UPDATE hub.patterns p SET entry = NULL  -- hub.patterns_keep_entry computes it
    FROM unnest(types, names) AS k(t, n)
    WHERE p.pattern_type = k.t AND p.canonical_name = k.n
      AND p.entry -> 'aliases' IS DISTINCT FROM to_jsonb(ARRAY(
          SELECT a.name FROM hub.pattern_aliases a
          WHERE a.pattern_type = p.pattern_type AND a.canonical_name = p.canonical_name
          ORDER BY a.observations DESC, a.name LIMIT 20));
END
$$;

CREATE OR REPLACE FUNCTION hub.pattern_aliases_keep_entries() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    types text[];
    names text[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(t), array_agg(n) INTO types, names
        FROM (SELECT DISTINCT pattern_type, canonical_name FROM qa_new_aliases) AS k(t, n);
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(t), array_agg(n) INTO types, names
        FROM (SELECT pattern_type, canonical_name FROM qa_new_aliases
              UNION SELECT pattern_type, canonical_name FROM qa_old_aliases) AS k(t, n);
    ELSE
        SELECT array_agg(t), array_agg(n) INTO types, names
        FROM (SELECT DISTINCT pattern_type, canonical_name FROM qa_old_aliases) AS k(t, n);
    END IF;
    IF types IS NOT NULL THEN
        PERFORM hub.pattern_entries_refresh_aliases(types, names);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS patterns_keep_entry ON hub.patterns;
CREATE TRIGGER patterns_keep_entry BEFORE INSERT OR UPDATE ON hub.patterns
    FOR EACH ROW EXECUTE FUNCTION hub.patterns_keep_entry();
DROP TRIGGER IF EXISTS pattern_aliases_keep_entries_ins ON hub.pattern_aliases;
CREATE TRIGGER pattern_aliases_keep_entries_ins AFTER INSERT ON hub.pattern_aliases
    REFERENCING NEW TABLE AS qa_new_aliases
    FOR EACH STATEMENT EXECUTE FUNCTION hub.pattern_aliases_keep_entries();
DROP TRIGGER IF EXISTS pattern_aliases_keep_entries_upd ON hub.pattern_aliases;
CREATE TRIGGER pattern_aliases_keep_entries_upd AFTER UPDATE ON hub.pattern_aliases
    REFERENCING OLD TABLE AS qa_old_aliases NEW TABLE AS qa_new_aliases
    FOR EACH STATEMENT EXECUTE FUNCTION hub.pattern_aliases_keep_entries();
DROP TRIGGER IF EXISTS pattern_aliases_keep_entries_del ON hub.pattern_aliases;
CREATE TRIGGER pattern_aliases_keep_entries_del AFTER DELETE ON hub.pattern_aliases
    REFERENCING OLD TABLE AS qa_old_aliases
    FOR EACH STATEMENT EXECUTE FUNCTION hub.pattern_aliases_keep_entries();

-- Backfill: every row gets its entry (the trigger computes it), then it may never be missing.
UPDATE hub.patterns SET entry = NULL WHERE entry IS NULL;
ALTER TABLE hub.patterns ALTER COLUMN entry SET NOT NULL;

-- The hit path reads the stored entry. Same signature, grants (CREATE OR REPLACE keeps them),
-- SECURITY DEFINER and fixed search_path, same JSON, errors, miss path and query count as sql/015;
-- the same input passes the fast check (a cheaper form of sql/015's regular expression).
-- A name sent before finds its key through its alias (one index lookup); only any other name is
-- canonicalised (coalesce is lazy). A session whose time zone is not UTC gets the timestamps
-- re-rendered in its zone, as sql/015 rendered them.
CREATE OR REPLACE FUNCTION hub_api.query_pattern(pattern_type text, name text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_type text := query_pattern.pattern_type;
    v_name text := query_pattern.name;
    v_doc jsonb;
    v_n bigint;
    v_marked boolean;
    v_key text;
    v_request bigint;
    v_new boolean;
    v_window timestamptz;
    v_msg bigint;
BEGIN
    IF v_type IS NULL OR v_type NOT IN ('framework', 'technology', 'microservice', 'code') THEN
        PERFORM hub.check_pattern_type(v_type);  -- raises, naming the value
    END IF;
    -- sql/015's test (printable ASCII, no surrounding space, 1..200 characters) without its bounded
    -- repetition {0,198}, which cost ~15 us a call: the length, a plain regex, the last character.
    IF v_name IS NULL OR octet_length(v_name) > 200 OR v_name !~ '^[!-~][ -~]*$' OR right(v_name, 1) = ' ' THEN
        v_name := hub.check_pattern_name(v_name);  -- raises, or strips (Unicode, spaces)
    END IF;
    SELECT p.entry, nextval('hub.pattern_queries_seq'),
           EXISTS (SELECT 1 FROM hub.pattern_query_marks m WHERE m.hour = date_trunc('hour', now(), 'UTC'))
    INTO v_doc, v_n, v_marked
    FROM hub.patterns p
    WHERE p.pattern_type = v_type
      AND p.canonical_name = coalesce((SELECT a.canonical_name FROM hub.pattern_aliases a
                                       WHERE a.pattern_type = v_type AND a.name = v_name),
                                      hub.canonical_pattern_name(v_name));
    IF v_doc IS NOT NULL THEN
        IF NOT v_marked THEN  -- the first query of this UTC hour (see hub.count_pattern_query)
            INSERT INTO hub.pattern_query_marks (hour, first_query)
            VALUES (date_trunc('hour', now(), 'UTC'), v_n) ON CONFLICT DO NOTHING;
        END IF;
        IF current_setting('TimeZone') NOT IN ('UTC', 'Etc/UTC') THEN
            SELECT v_doc || hub.pattern_entry_times(p) INTO v_doc
            FROM hub.patterns p WHERE p.pattern_type = v_doc ->> 'pattern_type' AND p.canonical_name = v_doc ->> 'name';
        END IF;
        RETURN v_doc;
    END IF;
    v_key := hub.canonical_pattern_name(v_name);
    v_window := date_trunc('hour', now(), 'UTC');
    INSERT INTO hub.pattern_discovery_requests AS r (pattern_type, canonical_name, name, window_start)
    VALUES (v_type, v_key, v_name, v_window)
    ON CONFLICT (pattern_type, canonical_name, window_start) DO UPDATE
        SET askers = r.askers + 1, last_asked_at = clock_timestamp()
    RETURNING r.request_id, (r.xmax = 0) INTO v_request, v_new;
    IF v_new THEN
        SELECT s INTO v_msg FROM pgmq.send('pattern_discovery', jsonb_build_object(
            'type', 'pattern_discovery', 'source', 'centralcloud',
            'timestamp', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'request_id', v_request, 'pattern_type', v_type, 'name', v_name, 'canonical_name', v_key,
            'window_start', to_char(v_window AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))) AS s;
        UPDATE hub.pattern_discovery_requests SET msg_id = v_msg WHERE request_id = v_request;
    END IF;
    PERFORM hub.count_pattern_query();
    RETURN jsonb_build_object('status', 'unknown', 'pattern_type', v_type, 'name', v_key,
                              'asked_name', v_name, 'discovery_request_id', v_request);
END
$$;
