-- Message recall (issue 14): a message's body removed, its row and msgid kept (a tombstone),
-- and the group told through its event log.

-- Recalls message p_msgid of p_gid for p_by (NULL: the admin API, which may recall any).
-- A member recalls their own messages less than p_window_ms after their ts; owners and admins
-- recall any message of the group at any time. A message already tombstoned (recalled or
-- erased) is left as it is and nothing is told: recalling twice answers the same.
-- Returns the effects: the `message_recalled` event and the group's new versions.
CREATE OR REPLACE FUNCTION herald_recall(
    p_gid bigint, p_msgid bigint, p_by bigint, p_window_ms bigint
) RETURNS jsonb[]
LANGUAGE plpgsql AS $$
DECLARE
    v_role text;
    v_sender bigint;
    v_ts bigint;
    v_tombstone text;
BEGIN
    PERFORM herald_lock_group(p_gid);
    IF p_by IS NOT NULL THEN
        v_role := herald_role(p_gid, p_by);
        IF v_role IS NULL THEN
            PERFORM herald_refuse('HR403', 'not_member', jsonb_build_object('gid', p_gid));
        END IF;
    END IF;
    SELECT m.sender_uid, m.ts, m.tombstone INTO v_sender, v_ts, v_tombstone
    FROM group_msgs m WHERE m.gid = p_gid AND m.msgid = p_msgid
    FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM herald_refuse('HR404', 'message_missing',
            jsonb_build_object('gid', p_gid, 'msgid', p_msgid));
    END IF;
    IF v_tombstone IS NOT NULL THEN
        RETURN '{}';
    END IF;
    IF v_role = 'member' THEN
        IF v_sender <> p_by THEN
            PERFORM herald_refuse('HR403', 'recall_forbidden',
                jsonb_build_object('gid', p_gid, 'msgid', p_msgid));
        END IF;
        IF herald_now_ms() - v_ts >= p_window_ms THEN
            PERFORM herald_refuse('HR403', 'recall_window_passed',
                jsonb_build_object('gid', p_gid, 'msgid', p_msgid, 'window_ms', p_window_ms));
        END IF;
    END IF;
    UPDATE group_msgs
    SET body = 'null', tombstone = 'recalled', tombstoned_by = p_by,
        tombstoned_at = herald_now_ms()
    WHERE gid = p_gid AND msgid = p_msgid;
    RETURN ARRAY[herald_event(p_gid, jsonb_build_object(
            'event', 'message_recalled', 'msgid', p_msgid, 'by', p_by))]
        || herald_notices(ARRAY[p_gid], '{}');
END;
$$;
