-- Erasure of a user's data (issue 14), in steps that are each idempotent, so that running
-- it twice, concurrently, or again after a crash halfway ends the same:
--   1. herald_erase_begin: the user is deactivated (herald_deactivate: every group left with
--      its events, ownership passed on, friendships ended, requests dropped);
--   2. herald_erase_messages, batch after batch: their messages become 'erased' tombstones,
--      each batch its own short transaction taking only the rows' locks, never a group's, so
--      sends to those groups go on meanwhile;
--   3. herald_erase_finish: their own rows (friend rows, conversations, departures) deleted
--      and their profile blanked; the users row stays, deactivated, marked erased_at.

-- Step 1. Counts what it ends (0 on a rerun) and returns the deactivation's effects. The
-- user's row is locked first (as herald_deactivate would, users rows before any other), so
-- that of two erasures at once only one counts what they end.
CREATE OR REPLACE FUNCTION herald_erase_begin(
    p_uid bigint, OUT friends bigint, OUT requests bigint, OUT effects jsonb[]
)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM users WHERE uid = p_uid FOR UPDATE;
    SELECT count(*) INTO friends FROM friends WHERE uid = p_uid AND active;
    SELECT count(*) INTO requests FROM friend_requests WHERE from_uid = p_uid OR to_uid = p_uid;
    effects := herald_deactivate(p_uid);
END;
$$;

-- Step 2. Tombstones the user's next p_limit messages after (p_after_gid, p_after_msgid), in
-- (gid, msgid) order. Returns how many it erased (those already erased are left alone) and
-- the last (gid, msgid) it looked at, NULL once there are no more.
CREATE OR REPLACE FUNCTION herald_erase_messages(
    p_uid bigint, p_after_gid bigint, p_after_msgid bigint, p_limit integer
) RETURNS TABLE (erased bigint, last_gid bigint, last_msgid bigint)
LANGUAGE sql AS $$
    WITH batch AS (
        SELECT m.gid, m.msgid FROM group_msgs m
        WHERE m.sender_uid = p_uid AND (m.gid, m.msgid) > (p_after_gid, p_after_msgid)
        ORDER BY m.gid, m.msgid
        LIMIT p_limit
    ), done AS (
        UPDATE group_msgs m
        SET body = 'null', tombstone = 'erased', tombstoned_by = NULL,
            tombstoned_at = herald_now_ms()
        FROM batch b
        WHERE m.gid = b.gid AND m.msgid = b.msgid AND m.tombstone IS DISTINCT FROM 'erased'
        RETURNING 1
    ), last AS (
        SELECT b.gid, b.msgid FROM batch b ORDER BY b.gid DESC, b.msgid DESC LIMIT 1
    )
    SELECT (SELECT count(*) FROM done), (SELECT gid FROM last), (SELECT msgid FROM last)
$$;

-- Step 3. Deletes the user's own rows and blanks their profile (its versions move, so the
-- users who see it sync it blank). Other users' friend rows naming them stay (inactive):
-- they are those users' record of the friendship's end, for their incremental sync.
-- Returns the conversations deleted and the effects (notices).
CREATE OR REPLACE FUNCTION herald_erase_finish(
    p_uid bigint, OUT conversations bigint, OUT effects jsonb[]
)
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM friends WHERE uid = p_uid;
    DELETE FROM friend_requests WHERE from_uid = p_uid OR to_uid = p_uid;
    DELETE FROM group_departures WHERE uid = p_uid;
    DELETE FROM conversations WHERE uid = p_uid;
    GET DIAGNOSTICS conversations = ROW_COUNT;
    effects := herald_update_profiles(ARRAY[p_uid], ARRAY[''], ARRAY[''], ARRAY['']);
    -- The app's backend is told once, by the first erasure to finish, so it can forget its
    -- own copies (of messages.stored bodies, say).
    IF herald_webhooks_on() AND (SELECT erased_at IS NULL FROM users WHERE uid = p_uid) THEN
        INSERT INTO webhook_outbox (kind, data)
        VALUES ('user.erased', json_build_object('uid', p_uid, 'at', herald_now_ms()));
    END IF;
    UPDATE users SET erased_at = coalesce(erased_at, herald_now_ms()) WHERE uid = p_uid;
END;
$$;
