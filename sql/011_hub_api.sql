-- The pattern query API for instances (issue 11): schema hub_api, SECURITY DEFINER functions with a
-- fixed search_path and fully qualified names inside. EXECUTE goes to queue_assets_producer (and so
-- to every instance_<id> role; queue_assets.security grants it at `queue-assets init`); instances
-- still have no right on hub.* or on pgmq.pattern_discovery. API and examples: docs/patterns.md.
CREATE SCHEMA IF NOT EXISTS hub_api;
REVOKE ALL ON SCHEMA hub_api FROM PUBLIC;

-- Queries per UTC hour, for `queue-assets status`, without a write per query: a write would give
-- every read its own transaction id and commit record, which measured more than the lookup itself.
-- Every call takes a number from a sequence (non-transactional, no lock); the first call of each
-- hour records the number it took. Queries of an hour = the next hour's first number (or, for the
-- latest hour, the sequence's last value + 1) minus its own. Misses per hour are the askers of that
-- hour's discovery requests. Near an hour boundary a concurrent caller may count in the previous hour.
CREATE SEQUENCE IF NOT EXISTS hub.pattern_queries_seq;
CREATE TABLE IF NOT EXISTS hub.pattern_query_marks (
    hour         timestamptz PRIMARY KEY,
    first_query  bigint      NOT NULL
);

-- The helpers below are plpgsql without a SET clause: they are only called from the hub_api
-- functions, whose search_path is already pinned, and a SQL function (or a SET clause) would be
-- planned again in every transaction, a plpgsql one keeps its plans for the session.
CREATE OR REPLACE FUNCTION hub.count_pattern_query() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    n CONSTANT bigint := nextval('hub.pattern_queries_seq');
    h CONSTANT timestamptz := date_trunc('hour', now(), 'UTC');
BEGIN
    IF NOT EXISTS (SELECT 1 FROM hub.pattern_query_marks m WHERE m.hour = h) THEN
        INSERT INTO hub.pattern_query_marks (hour, first_query) VALUES (h, n) ON CONFLICT DO NOTHING;
    END IF;
END
$$;

CREATE OR REPLACE VIEW hub.pattern_queries_per_hour AS
SELECT m.hour,
       coalesce(lead(m.first_query) OVER (ORDER BY m.hour),
                (SELECT s.last_value + 1 FROM hub.pattern_queries_seq s)) - m.first_query AS queries,
       coalesce((SELECT sum(r.askers) FROM hub.pattern_discovery_requests r WHERE r.window_start = m.hour), 0)
           AS misses
FROM hub.pattern_query_marks m;

-- Input checks: an error that names the value and the reason (SQLSTATE 22023), never a discovery.
CREATE OR REPLACE FUNCTION hub.check_pattern_type(pattern_type text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF pattern_type IS NULL OR pattern_type NOT IN ('framework', 'technology', 'microservice', 'code') THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('pattern_type %s is not a pattern kind; expected one of: framework, technology, '
                             'microservice, code', coalesce(quote_literal(left(pattern_type, 60)), 'NULL'));
    END IF;
    RETURN pattern_type;
END
$$;

-- The name stripped of surrounding whitespace (the characters Python's str.strip removes), checked
-- as queue_assets.patterns.canonical.check_name checks it.
CREATE OR REPLACE FUNCTION hub.check_pattern_name(name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    bad CONSTANT text := '[\x01-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]';
    ch text;
    stripped text;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'name is NULL; give the pattern''s name';
    END IF;
    ch := substring(name FROM bad);
    IF ch IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('name %s contains U+%s (%s) at position %s; control and bidirectional '
                             'override/isolate characters are not allowed',
                             quote_literal(left(regexp_replace(name, bad, '?', 'g'), 60)),
                             upper(lpad(to_hex(ascii(ch)), 4, '0')),
                             CASE WHEN ascii(ch) < 32 OR ascii(ch) BETWEEN 127 AND 159 THEN 'a control character'
                                  ELSE 'a bidirectional override/isolate character' END,
                             strpos(name, ch) - 1);
    END IF;
    stripped := btrim(name, U&' \00A0\1680\2000\2001\2002\2003\2004\2005\2006\2007\2008\2009\200A\2028\2029\202F\205F\3000');
    IF stripped = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'name is empty (after stripping whitespace); give the pattern''s name';
    END IF;
    IF char_length(stripped) > 200 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('name %s is %s characters long; at most 200 are allowed',
                             quote_literal(left(stripped, 60) || '...'), char_length(stripped));
    END IF;
    RETURN stripped;
END
$$;

-- One catalogue row as the API returns it (the SDK's queue_assets.patterns.models.PatternInfo).
CREATE OR REPLACE FUNCTION hub.pattern_json(p hub.patterns, alias_limit integer) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    aliases jsonb;
BEGIN
    SELECT coalesce(jsonb_agg(a.name), '[]'::jsonb) INTO aliases
    FROM (SELECT a.name FROM hub.pattern_aliases a
          WHERE a.pattern_type = p.pattern_type AND a.canonical_name = p.canonical_name
          ORDER BY a.observations DESC, a.name LIMIT alias_limit) a;
    RETURN jsonb_build_object(
        'status', p.status, 'pattern_type', p.pattern_type, 'name', p.canonical_name,
        'display_name', p.display_name, 'aliases', aliases,
        'instances', p.instances, 'observations', p.observations, 'confidence', p.confidence,
        'confidence_instances', p.confidence_instances, 'languages', to_jsonb(p.languages),
        'top_indicators', to_jsonb(p.top_indicators), 'examples', p.examples,
        'first_seen', p.first_seen, 'last_seen', p.last_seen, 'rank', p.rank, 'version', p.version,
        'enrichment', p.enrichment,
        'provenance', CASE WHEN p.enriched_at IS NULL THEN NULL ELSE jsonb_build_object(
            'provider', p.enrichment_provider, 'model', p.enrichment_model,
            'request_id', p.enrichment_request_id, 'enriched_at', p.enriched_at) END);
END
$$;

-- One pattern by any name it was sent under (or any name with the same canonical key). A miss
-- returns {"status": "unknown", "discovery_request_id": ...}: the request is recorded and ONE
-- message per key per UTC hour goes to pgmq.pattern_discovery, however many callers ask.
CREATE OR REPLACE FUNCTION hub_api.query_pattern(pattern_type text, name text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_type CONSTANT text := hub.check_pattern_type(query_pattern.pattern_type);
    v_name CONSTANT text := hub.check_pattern_name(query_pattern.name);
    v_doc jsonb;
    v_key text;
    v_request bigint;
    v_new boolean;
    v_window timestamptz;
    v_msg bigint;
BEGIN
    -- The hit path is ONE statement (fewest plpgsql steps: each costs set-up in every transaction).
    -- A name sent before finds its key through its alias; any other is canonicalised (coalesce is lazy).
    SELECT to_jsonb(p) - '{canonical_name,created_at,updated_at,enrichment_provider,enrichment_model,enrichment_request_id,enriched_at}'::text[]
           || jsonb_build_object(
                'name', p.canonical_name,
                'aliases', (SELECT coalesce(jsonb_agg(a.name), '[]'::jsonb)
                            FROM (SELECT a.name FROM hub.pattern_aliases a
                                  WHERE a.pattern_type = p.pattern_type AND a.canonical_name = p.canonical_name
                                  ORDER BY a.observations DESC, a.name LIMIT 20) a),
                'provenance', CASE WHEN p.enriched_at IS NULL THEN NULL ELSE jsonb_build_object(
                    'provider', p.enrichment_provider, 'model', p.enrichment_model,
                    'request_id', p.enrichment_request_id, 'enriched_at', p.enriched_at) END)
    INTO v_doc
    FROM hub.patterns p
    WHERE p.pattern_type = v_type
      AND p.canonical_name = coalesce((SELECT a.canonical_name FROM hub.pattern_aliases a
                                       WHERE a.pattern_type = v_type AND a.name = v_name),
                                      hub.canonical_pattern_name(v_name));
    IF v_doc IS NOT NULL THEN
        PERFORM hub.count_pattern_query();
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

-- The catalogue by rank (unranked patterns last, by instances). NULL filters match everything.
-- Returns {"patterns": [...], "count": n, "limit": lim}.
CREATE OR REPLACE FUNCTION hub_api.query_patterns(
    pattern_type text DEFAULT NULL, language text DEFAULT NULL, min_instances integer DEFAULT NULL,
    status text DEFAULT NULL, lim integer DEFAULT 100) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_type text := query_patterns.pattern_type;
    v_language text := lower(query_patterns.language);
    v_min integer := coalesce(query_patterns.min_instances, 0);
    v_status text := query_patterns.status;
    v_lim integer := coalesce(query_patterns.lim, 100);
    v_result jsonb;
BEGIN
    IF v_type IS NOT NULL THEN
        PERFORM hub.check_pattern_type(v_type);
    END IF;
    IF v_status IS NOT NULL AND v_status NOT IN
            ('observed', 'enriching', 'enriched', 'approved', 'rejected', 'enrichment_failed') THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('status %s is not a pattern status; expected one of: observed, enriching, '
                             'enriched, approved, rejected, enrichment_failed', quote_literal(left(v_status, 60)));
    END IF;
    IF v_lim NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('lim %s is out of range; give 1 to 1000', v_lim);
    END IF;
    IF v_min < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('min_instances %s is negative', v_min);
    END IF;
    IF v_language IS NOT NULL AND (v_language = '' OR char_length(v_language) > 200) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('language %s must be 1 to 200 characters', quote_literal(left(v_language, 60)));
    END IF;
    SELECT coalesce(jsonb_agg(hub.pattern_json(p, 5) ORDER BY p.rank NULLS LAST, p.instances DESC,
                              p.observations DESC, p.pattern_type, p.canonical_name), '[]'::jsonb)
    INTO v_result
    FROM (SELECT * FROM hub.patterns p
          WHERE (v_type IS NULL OR p.pattern_type = v_type)
            AND (v_status IS NULL OR p.status = v_status)
            AND p.instances >= v_min
            AND (v_language IS NULL OR EXISTS (SELECT 1 FROM unnest(p.languages) l WHERE lower(l) = v_language))
          ORDER BY p.rank NULLS LAST, p.instances DESC, p.observations DESC, p.pattern_type, p.canonical_name
          LIMIT v_lim) p;
    PERFORM hub.count_pattern_query();
    RETURN jsonb_build_object('patterns', v_result, 'count', jsonb_array_length(v_result), 'limit', v_lim);
END
$$;

REVOKE ALL ON FUNCTION hub_api.query_pattern(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION hub_api.query_patterns(text, text, integer, text, integer) FROM PUBLIC;

-- Where the producer group already exists, give it the API now (init grants it too).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'queue_assets_producer') THEN
        GRANT USAGE ON SCHEMA hub_api TO queue_assets_producer;
        GRANT EXECUTE ON FUNCTION hub_api.query_pattern(text, text) TO queue_assets_producer;
        GRANT EXECUTE ON FUNCTION hub_api.query_patterns(text, text, integer, text, integer) TO queue_assets_producer;
    END IF;
END
$$;
