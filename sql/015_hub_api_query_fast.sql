-- hub_api.query_pattern with less work per hit (issue 11: at most 1.5x a plain indexed SELECT).
-- Same signature, grants (CREATE OR REPLACE keeps them), SECURITY DEFINER and fixed search_path, same
-- JSON (with sql/014's approval columns, which sql/011's to_jsonb(row) carried), same errors, same
-- miss path as sql/011. What changed on the hit path:
--   * the input checks call no function for the common input: a pattern_type of the four kinds, and a
--     name of printable ASCII without surrounding spaces, 1..200 characters (one cached regex), which
--     hub.check_pattern_name would return unchanged; any other input goes through the sql/011
--     checks (same errors, same stripping);
--   * the JSON is built column by column (jsonb_build_object) instead of to_jsonb(row) minus the
--     internal keys, and the aliases as an ARRAY sub-select instead of jsonb_agg over a sub-query;
--   * the query count (hub.count_pattern_query) is folded into the lookup: the sequence number and
--     whether this hour already has its mark come back with the row, so a hit is ONE plpgsql statement
--     plus an INSERT in the first query of each hour only.
-- Measured: docs/benchmarks.md ("Pattern authority").
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
    IF v_name IS NULL OR v_name !~ '^[!-~](?:[ -~]{0,198}[!-~])?$' THEN
        v_name := hub.check_pattern_name(v_name);  -- raises, or strips (Unicode, spaces)
    END IF;
    -- A name sent before finds its key through its alias; any other is canonicalised (coalesce is lazy).
    SELECT jsonb_build_object(
               'status', p.status, 'pattern_type', p.pattern_type, 'name', p.canonical_name,
               'display_name', p.display_name,
               'aliases', to_jsonb(ARRAY(SELECT a.name FROM hub.pattern_aliases a
                                         WHERE a.pattern_type = p.pattern_type
                                           AND a.canonical_name = p.canonical_name
                                         ORDER BY a.observations DESC, a.name LIMIT 20)),
               'instances', p.instances, 'observations', p.observations, 'confidence', p.confidence,
               'confidence_instances', p.confidence_instances, 'languages', p.languages,
               'top_indicators', p.top_indicators, 'examples', p.examples,
               'first_seen', p.first_seen, 'last_seen', p.last_seen, 'rank', p.rank, 'version', p.version,
               'enrichment', p.enrichment, 'enrichment_error', p.enrichment_error,
               'broadcast_provisional', p.broadcast_provisional,
               'approval', p.approval, 'reviewed_by', p.reviewed_by, 'review_reason', p.review_reason,
               'reviewed_at', p.reviewed_at,
               'provenance', CASE WHEN p.enriched_at IS NULL THEN NULL ELSE jsonb_build_object(
                   'provider', p.enrichment_provider, 'model', p.enrichment_model,
                   'request_id', p.enrichment_request_id, 'enriched_at', p.enriched_at) END),
           nextval('hub.pattern_queries_seq'),
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
