-- Deactivation (seed 003): a user leaves everything at once.

-- Deactivates a user: they leave every group exactly as a removal would (reason
-- deactivated, ownership passed on) and every friend list, and their requests are dropped.
-- Repeating it only closes their sessions again.
CREATE OR REPLACE FUNCTION herald_deactivate(p_uid bigint) RETURNS jsonb[]
LANGUAGE plpgsql AS $$
DECLARE
    v_gids bigint[];
    v_gid bigint;
    v_friends bigint[];
    v_friend bigint;
    v_out jsonb[] := '{}';
    v_touched bigint[] := ARRAY[p_uid];
BEGIN
    UPDATE users SET active = false WHERE uid = p_uid;
    IF NOT FOUND THEN
        PERFORM herald_refuse('HR404', 'user_missing', jsonb_build_object('uid', p_uid));
    END IF;
    SELECT coalesce(array_agg(gid ORDER BY gid), '{}') INTO v_gids
    FROM group_members WHERE uid = p_uid;
    -- Every group's lock first, in gid order, before any user's.
    FOREACH v_gid IN ARRAY v_gids LOOP
        PERFORM herald_bump_group(v_gid, 0, 0);
    END LOOP;
    FOREACH v_gid IN ARRAY v_gids LOOP
        v_out := v_out || herald_remove_member(v_gid, p_uid, NULL, 'deactivated');
    END LOOP;
    SELECT coalesce(array_agg(friend_uid ORDER BY friend_uid), '{}') INTO v_friends
    FROM friends WHERE uid = p_uid AND active;
    FOREACH v_friend IN ARRAY v_friends LOOP
        v_out := v_out || herald_befriend(p_uid, v_friend, false);
    END LOOP;
    DELETE FROM friend_requests WHERE from_uid = p_uid OR to_uid = p_uid;
    RETURN v_out
        || herald_notices(v_gids, v_touched)
        || jsonb_build_object('effect', 'deactivated', 'uid', p_uid);
END;
$$;
