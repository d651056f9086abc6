-- The webhook outbox (webhook_outbox): events recorded for the app's backend, claimed,
-- delivered and retried by the nodes' deliverers.
--
-- Recording is on for the connections of nodes with a webhook URL, which set the
-- `herald.webhooks` setting to `on` when they connect; elsewhere nothing is recorded, so a
-- deployment without webhooks never grows the outbox.

CREATE OR REPLACE FUNCTION herald_webhooks_on() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('herald.webhooks', true), '') = 'on'
$$;

-- Records events of the given kinds, each with its data (JSON text), in order.
CREATE OR REPLACE FUNCTION herald_webhook_record(p_kinds text[], p_data text[]) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO webhook_outbox (kind, data)
    SELECT e.kind, e.data::json
    FROM unnest(p_kinds, p_data) WITH ORDINALITY AS e (kind, data, ord)
    WHERE herald_webhooks_on()
    ORDER BY e.ord
$$;

-- Claims up to p_limit events due for delivery, oldest first, for p_lease_ms: no other
-- deliverer takes them meanwhile (rows another deliverer is claiming are skipped, not waited
-- for). Returns each as posted, oldest first.
CREATE OR REPLACE FUNCTION herald_webhook_claim(p_limit integer, p_lease_ms bigint)
RETURNS TABLE (id bigint, kind text, data text, created_ms bigint, attempts integer)
LANGUAGE sql AS $$
    WITH claimed AS (
        UPDATE webhook_outbox o
        SET due_at = now() + make_interval(secs => p_lease_ms / 1000.0),
            attempts = o.attempts + 1
        FROM (
            SELECT w.id FROM webhook_outbox w
            WHERE w.due_at <= now()
            ORDER BY w.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        ) due
        WHERE o.id = due.id
        RETURNING o.id, o.kind, o.data, o.created_at, o.attempts
    )
    SELECT c.id, c.kind,
           CASE c.kind WHEN 'messages.stored' THEN herald_webhook_messages(c.data)
                       ELSE c.data END::text,
           (extract(epoch FROM c.created_at) * 1000)::bigint, c.attempts
    FROM claimed c
    ORDER BY c.id
$$;

-- A `messages.stored` event as posted: the messages of its msgid range still stored, read
-- from group_msgs (bodies exactly as stored), how many of the range retention pruned before
-- the delivery (always the oldest: pruning takes a prefix), and the members who were offline.
CREATE OR REPLACE FUNCTION herald_webhook_messages(p_stored json) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'gid', r.gid,
        'messages', coalesce(
            (SELECT json_agg(CASE WHEN m.tombstone IS NULL
                        THEN json_build_object('msgid', m.msgid, 'from', m.sender_uid,
                            'ts', m.ts, 'cmid', m.cmid, 'body', m.body::json)
                        -- Recalled or erased before it was posted: its body is not told.
                        ELSE json_build_object('msgid', m.msgid, 'from', m.sender_uid,
                            'ts', m.ts, 'cmid', m.cmid, 'tombstone', m.tombstone)
                        END ORDER BY m.msgid)
             FROM group_msgs m
             WHERE m.gid = r.gid AND m.msgid BETWEEN r.first AND r.last),
            '[]'),
        'pruned', r.last - r.first + 1 - (SELECT count(*) FROM group_msgs m
                                          WHERE m.gid = r.gid AND m.msgid BETWEEN r.first AND r.last),
        'offline', p_stored -> 'offline')
    FROM (SELECT (p_stored ->> 'gid')::bigint AS gid, (p_stored ->> 'first')::bigint AS first,
                 (p_stored ->> 'last')::bigint AS last) r
$$;

-- The events the backend accepted: done.
CREATE OR REPLACE FUNCTION herald_webhook_delivered(p_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM webhook_outbox WHERE id = ANY (p_ids)
$$;

-- The events whose delivery failed: due again after p_delay_ms.
CREATE OR REPLACE FUNCTION herald_webhook_retry(p_ids bigint[], p_delay_ms bigint) RETURNS void
LANGUAGE sql AS $$
    UPDATE webhook_outbox
    SET due_at = now() + make_interval(secs => p_delay_ms / 1000.0)
    WHERE id = ANY (p_ids)
$$;

-- The backlog: events not delivered yet, and the age of the oldest in seconds (0 if none).
CREATE OR REPLACE FUNCTION herald_webhook_backlog(OUT pending bigint, OUT oldest_s double precision)
LANGUAGE sql STABLE AS $$
    SELECT count(*),
           coalesce(extract(epoch FROM now() - min(created_at)), 0)::double precision
    FROM webhook_outbox
$$;
