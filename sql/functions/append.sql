-- Group commit in one round trip: appends a batch of messages to a group.
--
-- The group row's lock serialises every writer of the group on every node; msgids come
-- from its counter in the same transaction, so they are dense and commit order equals msgid
-- order. Each statement of a PL/pgSQL function takes a fresh snapshot (READ COMMITTED), so
-- the look-up of earlier sends runs after the lock is held and sees every committed resend.
--
-- Returns one row per input message, in input order (ord from 1): its msgid and ts, whether
-- it was a resend of a (sender, cmid) stored before or earlier in the batch (dup: then the
-- msgid and ts are the original's), and the group's newest msgid after the batch.
--
-- Each message's ts is the gateway's stamp, lowered to at most PostgreSQL's clock, then raised
-- to at least the ts of the message before it (groups.last_ts, then the batch's own): ts never
-- decreases with msgid inside a group, whatever the gateways' clocks or a PostgreSQL clock
-- set back, so the messages older than any age are a prefix of the group's msgids (what
-- retention prunes), and no message lands beyond the partitions made ahead of now
-- (sql/functions/retention.sql).
--
-- With webhooks on, the messages stored (resends left out) are recorded in the webhook outbox
-- in the same transaction, as one `messages.stored` event naming their msgids and p_offline:
-- the members with no session online when they were stored, as the gateway knows them (NULL:
-- not known).
CREATE OR REPLACE FUNCTION herald_append(
    p_gid bigint,
    p_senders bigint[],
    p_cmids text[],
    p_stamps bigint[],
    p_bodies text[],
    p_offline bigint[]
) RETURNS TABLE (ord bigint, msgid bigint, ts bigint, dup boolean, latest bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
    v_last_ts bigint;
    v_now bigint := herald_now_ms();
BEGIN
    SELECT g.last_msgid, g.last_ts INTO v_last, v_last_ts FROM groups g WHERE g.gid = p_gid FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM herald_refuse('HR404', 'group_missing', jsonb_build_object('gid', p_gid));
    END IF;

    RETURN QUERY
    WITH input AS (
        SELECT i.ord, i.sender, i.cmid, i.ts, i.body
        FROM unnest(p_senders, p_cmids, p_stamps, p_bodies) WITH ORDINALITY
            AS i (sender, cmid, ts, body, ord)
    ), earlier AS (
        -- Resends of messages stored before (and not pruned since: a resend of a pruned
        -- message is stored again).
        SELECT i.ord, m.msgid, m.ts
        FROM input i
        JOIN group_msgs m ON m.gid = p_gid AND m.sender_uid = i.sender AND m.cmid = i.cmid
    ), firsts AS (
        -- The first of each new (sender, cmid) in the batch.
        SELECT DISTINCT ON (i.sender, i.cmid) i.ord, i.sender, i.cmid, i.ts, i.body
        FROM input i
        WHERE NOT EXISTS (SELECT 1 FROM earlier e WHERE e.ord = i.ord)
        ORDER BY i.sender, i.cmid, i.ord
    ), fresh AS (
        SELECT f.ord, f.sender, f.cmid, f.body,
               v_last + row_number() OVER (ORDER BY f.ord) AS msgid,
               -- Lowered to PostgreSQL's clock first, raised to the group's last ts after: if
               -- that clock went back (a failover), ts still never decreases.
               greatest(v_last_ts, least(v_now, max(f.ts) OVER (ORDER BY f.ord))) AS ts
        FROM firsts f
    ), stored AS (
        INSERT INTO group_msgs (gid, msgid, sender_uid, cmid, ts, body)
        SELECT p_gid, f.msgid, f.sender, f.cmid, f.ts, f.body FROM fresh f
    ), told AS (
        -- The msgids stored are one dense range: the deliverer reads the messages from
        -- group_msgs when it posts them, so no body is written twice.
        INSERT INTO webhook_outbox (kind, data)
        SELECT 'messages.stored', json_build_object(
            'gid', p_gid, 'first', min(f.msgid), 'last', max(f.msgid),
            'offline', to_json(p_offline))
        FROM fresh f
        WHERE herald_webhooks_on()
        HAVING count(*) > 0
    ), counted AS (
        UPDATE groups g
        SET last_msgid = v_last + (SELECT count(*) FROM fresh),
            last_ts = (SELECT max(f.ts) FROM fresh f)
        WHERE g.gid = p_gid AND EXISTS (SELECT 1 FROM fresh)
    )
    SELECT i.ord,
           coalesce(e.msgid, f.msgid),
           coalesce(e.ts, f.ts),
           e.ord IS NOT NULL OR f.ord <> i.ord,
           v_last + (SELECT count(*) FROM fresh)
    FROM input i
    LEFT JOIN earlier e ON e.ord = i.ord
    LEFT JOIN fresh f ON e.ord IS NULL AND f.sender = i.sender AND f.cmid = i.cmid
    ORDER BY i.ord;
END;
$$;
