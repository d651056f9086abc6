-- The friendship writers: requests, friendships made and ended.

-- Sets the friendship of two users on (both directions), moving both users' friend list
-- versions, and drops their requests. The caller holds both users' version locks.
CREATE OR REPLACE FUNCTION herald_set_friends(p_a bigint, p_b bigint, p_active boolean)
RETURNS jsonb[]
LANGUAGE plpgsql AS $$
DECLARE
    v_owner bigint;
    v_other bigint;
    v_user user_versions;
    v_changed bigint[] := '{}';
BEGIN
    DELETE FROM friend_requests
    WHERE (from_uid, to_uid) IN ((p_a, p_b), (p_b, p_a));
    FOREACH v_owner IN ARRAY ARRAY[least(p_a, p_b), greatest(p_a, p_b)] LOOP
        v_other := CASE WHEN v_owner = p_a THEN p_b ELSE p_a END;
        IF EXISTS (SELECT 1 FROM friends
                   WHERE uid = v_owner AND friend_uid = v_other AND active = p_active)
           OR (NOT p_active AND NOT EXISTS (
                   SELECT 1 FROM friends WHERE uid = v_owner AND friend_uid = v_other)) THEN
            CONTINUE;
        END IF;
        -- Becoming friends counts as a profile change too: the new friend's profile syncs.
        v_user := herald_bump_user(v_owner, 0, 0, 1, CASE WHEN p_active THEN 1 ELSE 0 END);
        INSERT INTO friends AS f (uid, friend_uid, active, user_list_version, user_info_version)
        VALUES (v_owner, v_other, p_active, v_user.friend_list_version, v_user.friend_info_version)
        ON CONFLICT (uid, friend_uid) DO UPDATE
            SET active = p_active,
                user_list_version = excluded.user_list_version,
                user_info_version = CASE WHEN p_active
                    THEN excluded.user_info_version ELSE f.user_info_version END;
        v_changed := v_changed || v_owner;
    END LOOP;
    RETURN herald_notices('{}', v_changed);
END;
$$;

-- Locks both users' version rows, in uid order.
CREATE OR REPLACE FUNCTION herald_lock_pair(p_a bigint, p_b bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM herald_bump_user(least(p_a, p_b), 0, 0, 0, 0);
    PERFORM herald_bump_user(greatest(p_a, p_b), 0, 0, 0, 0);
END;
$$;

-- p_from asks p_to to be friends. They become friends when p_to had asked too; otherwise
-- the request is kept (once) and p_to's sessions are told. Returns 'friends' or 'requested'.
CREATE OR REPLACE FUNCTION herald_request_friend(
    p_from bigint, p_to bigint, OUT status text, OUT effects jsonb[]
)
LANGUAGE plpgsql AS $$
DECLARE
    v_ts bigint := herald_now_ms();
BEGIN
    IF p_from = p_to THEN
        PERFORM herald_refuse('HR400', 'self_friendship', '{}');
    END IF;
    PERFORM herald_require_active(ARRAY[p_to]);
    PERFORM herald_lock_pair(p_from, p_to);
    effects := '{}';
    IF EXISTS (SELECT 1 FROM friends WHERE uid = p_from AND friend_uid = p_to AND active) THEN
        status := 'friends';
    ELSIF EXISTS (SELECT 1 FROM friend_requests WHERE from_uid = p_to AND to_uid = p_from) THEN
        status := 'friends';
        effects := herald_set_friends(p_from, p_to, true);
    ELSE
        status := 'requested';
        INSERT INTO friend_requests (from_uid, to_uid, ts) VALUES (p_from, p_to, v_ts)
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            effects := ARRAY[jsonb_build_object(
                'effect', 'friend_request', 'from', p_from, 'to', p_to, 'ts', v_ts)];
        END IF;
    END IF;
END;
$$;

-- Makes two users friends (the admin API) or ends their friendship or requests (either).
CREATE OR REPLACE FUNCTION herald_befriend(p_a bigint, p_b bigint, p_active boolean) RETURNS jsonb[]
LANGUAGE plpgsql AS $$
BEGIN
    IF p_a = p_b THEN
        PERFORM herald_refuse('HR400', 'self_friendship', '{}');
    END IF;
    IF p_active THEN
        PERFORM herald_require_active(ARRAY[p_a, p_b]);
    END IF;
    PERFORM herald_lock_pair(p_a, p_b);
    RETURN herald_set_friends(p_a, p_b, p_active);
END;
$$;
