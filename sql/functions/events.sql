-- Each group's event log (group_events): appending an event and trimming old ones.

-- Appends an event to a group's log as its next version. The log's body is the event with its
-- place: kind and fields (nulls dropped), gid, version and ts. Returns it as an `event` effect.
-- With webhooks on, it is recorded in the webhook outbox too, as a `group.event`.
CREATE OR REPLACE FUNCTION herald_event(p_gid bigint, p_event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_event jsonb;
BEGIN
    v_event := jsonb_strip_nulls(p_event || jsonb_build_object(
        'gid', p_gid,
        'version', (herald_bump_group(p_gid, 1, 0)).user_list_version,
        'ts', herald_now_ms()));
    INSERT INTO group_events (gid, version, body)
    VALUES (p_gid, (v_event ->> 'version')::bigint, v_event);
    IF herald_webhooks_on() THEN
        INSERT INTO webhook_outbox (kind, data) VALUES ('group.event', v_event::json);
    END IF;
    RETURN v_event || '{"effect": "event"}';
END;
$$;

-- Drops the events of each group older than its newest p_keep; returns how many went.
CREATE OR REPLACE FUNCTION herald_trim_events(p_keep bigint) RETURNS bigint
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM group_events e
        USING group_versions v
        WHERE e.gid = v.gid AND e.version <= v.user_list_version - p_keep
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;
