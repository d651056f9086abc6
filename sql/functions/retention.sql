-- Retention: the partitions of group_msgs (by range on ts), and pruning each group's oldest
-- messages by age and by count. Pruning removes a prefix of each group's msgids only, so the
-- msgids kept stay dense; herald_append keeps ts non-decreasing in msgid (see append.sql), so
-- an age cut is a prefix too.
--
-- The pruner (src/retention.rs) calls these on a connection of its own, one node at a time,
-- each call its own short transaction; none takes a groups row lock.

-- Creates the partitions missing from the newest one (or from the partition of now, if
-- there is none) until one holds now + p_ahead_ms. Partitions are p_width_ms wide,
-- aligned on multiples of it; the first after an older, unaligned one ends at the next
-- multiple. A new partition is created apart and attached (SHARE UPDATE EXCLUSIVE on
-- group_msgs, which sends do not wait for), not created as PARTITION OF (ACCESS EXCLUSIVE).
-- Returns how many were created.
CREATE OR REPLACE FUNCTION herald_ensure_partitions(p_width_ms bigint, p_ahead_ms bigint)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := herald_now_ms();
    v_from bigint;
    v_to bigint;
    v_name text;
    v_made integer := 0;
BEGIN
    -- Nodes starting together create each partition once (the key: "HRLDPART").
    PERFORM pg_advisory_xact_lock(x'48524c4450415254'::bigint);
    PERFORM set_config('lock_timeout', '5s', true);
    -- From the newest partition's end, even when that is long past (a database down for
    -- days): a gateway whose clock lags may still stamp a message there.
    SELECT coalesce(max(p.to_ts), v_now - v_now % p_width_ms) INTO v_from
    FROM group_msgs_partitions p;
    WHILE v_from <= v_now + p_ahead_ms LOOP
        v_to := v_from - v_from % p_width_ms + p_width_ms;
        v_name := 'group_msgs_' || v_from;
        EXECUTE format('CREATE TABLE %I (LIKE group_msgs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', v_name);
        EXECUTE format('ALTER TABLE %I ADD CHECK (ts >= %s AND ts < %s)', v_name, v_from, v_to);
        EXECUTE format('ALTER TABLE group_msgs ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                       v_name, v_from, v_to);
        INSERT INTO group_msgs_partitions (name, from_ts, to_ts) VALUES (v_name, v_from, v_to);
        v_from := v_to;
        v_made := v_made + 1;
    END LOOP;
    RETURN v_made;
END;
$$;

-- The partitions whose every row is older than p_max_age_ms (they end at or before now minus
-- it; none when it is 0), oldest first: those the deployment's age limit drops whole. A
-- group's own age limit is only ever stricter, so no group keeps anything in them. Tables a
-- pruner cut off mid-way left behind come first, whatever the limit: DETACH ... CONCURRENTLY
-- is two transactions ('finalize': still detaching), and the drop is a third ('drop':
-- detached, or gone, but still listed). Their rows are out of group_msgs, where an erasure
-- would not find them. The rest are to 'detach'.
CREATE OR REPLACE FUNCTION herald_expired_partitions(p_max_age_ms bigint)
RETURNS TABLE (name text, step text)
LANGUAGE sql STABLE AS $$
    SELECT p.name,
           CASE WHEN i.inhrelid IS NULL THEN 'drop'
                WHEN i.inhdetachpending THEN 'finalize'
                ELSE 'detach' END
    FROM group_msgs_partitions p
    LEFT JOIN pg_inherits i
        ON i.inhrelid = to_regclass(p.name) AND i.inhparent = 'group_msgs'::regclass
    WHERE (p_max_age_ms > 0 AND p.to_ts <= herald_now_ms() - p_max_age_ms)
       OR i.inhrelid IS NULL
       OR i.inhdetachpending
    ORDER BY i.inhrelid IS NOT NULL AND NOT i.inhdetachpending, p.to_ts
$$;

-- Drops a partition once detached, and forgets it.
CREATE OR REPLACE FUNCTION herald_forget_partition(p_name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS %I', p_name);
    DELETE FROM group_msgs_partitions WHERE name = p_name;
END;
$$;

-- The stricter of two limits, where NULL and 0 mean none.
CREATE OR REPLACE FUNCTION herald_stricter(p_a bigint, p_b bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT least(nullif(p_a, 0), nullif(p_b, 0))
$$;

-- The groups with messages to prune and the msgid each is to be pruned through: the count
-- limit keeps the newest max_messages; a group's own age limit, when stricter than the
-- deployment's (p_max_age_s; those at the deployment's go with its partitions), cuts
-- through the newest message older than it (ts grows with msgid, so that is a prefix).
-- p_max_age_s and p_max_messages: the deployment's limits, 0 for none.
CREATE OR REPLACE FUNCTION herald_prune_plan(p_max_age_s bigint, p_max_messages bigint)
RETURNS TABLE (gid bigint, through_msgid bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := herald_now_ms();
BEGIN
    RETURN QUERY
    WITH limits AS (
        SELECT g.gid, g.last_msgid, coalesce(p.through_msgid, 0) AS pruned,
               herald_stricter(g.retention_max_messages, p_max_messages) AS max_messages,
               CASE WHEN p_max_age_s = 0 OR g.retention_max_age_s < p_max_age_s
                    THEN g.retention_max_age_s END AS max_age_s
        FROM groups g
        LEFT JOIN group_msgs_pruned p ON p.gid = g.gid
    ), cuts AS (
        SELECT l.gid, l.pruned, greatest(
            l.last_msgid - l.max_messages,
            (SELECT m.msgid FROM group_msgs m
             WHERE l.max_age_s IS NOT NULL AND m.gid = l.gid
               AND m.ts < v_now - l.max_age_s * 1000
             ORDER BY m.msgid DESC LIMIT 1)) AS cut
        FROM limits l
        WHERE l.last_msgid - l.max_messages > l.pruned OR l.max_age_s IS NOT NULL
    )
    SELECT c.gid, c.cut FROM cuts c WHERE c.cut > c.pruned ORDER BY c.gid;
END;
$$;

-- Deletes the oldest of a group's messages at or below p_through, at most p_batch of them
-- (msgids are dense: those from the first kept one on). Returns how many went: 0 once
-- nothing is left at or below p_through.
CREATE OR REPLACE FUNCTION herald_prune_batch(p_gid bigint, p_through bigint, p_batch bigint)
RETURNS bigint
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM group_msgs m
        WHERE m.gid = p_gid
          AND m.msgid <= least(p_through,
                               (SELECT min(f.msgid) FROM group_msgs f WHERE f.gid = p_gid)
                               + p_batch - 1)
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;

-- Records that a group was pruned through p_through (never backwards).
CREATE OR REPLACE FUNCTION herald_pruned(p_gid bigint, p_through bigint) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO group_msgs_pruned AS p (gid, through_msgid) VALUES (p_gid, p_through)
    ON CONFLICT (gid) DO UPDATE SET through_msgid = greatest(p.through_msgid, p_through)
$$;

-- A group's own retention limits (NULL: the deployment's) and the oldest msgid it still
-- holds (NULL when it holds none).
CREATE OR REPLACE FUNCTION herald_group_retention(p_gid bigint)
RETURNS TABLE (gid bigint, max_age_s bigint, max_messages bigint, first_msgid bigint,
               latest bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT g.gid, g.retention_max_age_s, g.retention_max_messages,
           (SELECT min(m.msgid) FROM group_msgs m WHERE m.gid = g.gid), g.last_msgid
    FROM groups g WHERE g.gid = p_gid;
    IF NOT FOUND THEN
        PERFORM herald_refuse('HR404', 'group_missing', jsonb_build_object('gid', p_gid));
    END IF;
END;
$$;

-- Sets a group's own retention limits (NULL: the deployment's); returns them as
-- herald_group_retention does. One short statement on the groups row.
CREATE OR REPLACE FUNCTION herald_set_group_retention(
    p_gid bigint, p_max_age_s bigint, p_max_messages bigint
) RETURNS TABLE (gid bigint, max_age_s bigint, max_messages bigint, first_msgid bigint,
                 latest bigint)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE groups g
    SET retention_max_age_s = p_max_age_s, retention_max_messages = p_max_messages
    WHERE g.gid = p_gid;
    RETURN QUERY SELECT * FROM herald_group_retention(p_gid);
END;
$$;
