-- Version counters (seed 002): every version a client compares is a counter in a row of its
-- scope, moved inside the transaction that makes the change and under that row's lock: changes
-- to one scope commit in version order, so a reader that sees version N of a scope also sees
-- every change below N (gap-safe). Counter rows are created by upsert when missing, never
-- assumed to exist (seed 000). The scopes:
--   users.user_info_version                  a user's own profile (fields carry theirs)
--   group_versions.user_list_version         a group's member list = its newest event
--   group_versions.user_info_version         profiles of a group's members
--   user_versions.group_list_version         a user's group list
--   user_versions.group_info_version         info of a user's groups
--   user_versions.friend_list_version        a user's friend list
--   user_versions.friend_info_version        profiles of a user's friends
-- Each row that a sync may return is stamped with the version of its scope at its last
-- change, so "what changed since N" is "rows stamped above N".
--
-- Lock order, which keeps writers free of deadlocks: users rows, then group_versions rows
-- by gid, then groups rows, then user_versions rows by uid.

-- Moves a group's counters by the given steps; with steps of 0 it only takes the row's lock.
-- A missing row is created by the upsert (seed 000), starting from the highest versions the
-- group's rows are stamped with, so a client's versions never run ahead of the server's.
CREATE OR REPLACE FUNCTION herald_bump_group(p_gid bigint, p_list bigint, p_info bigint)
RETURNS group_versions
LANGUAGE plpgsql AS $$
DECLARE
    v group_versions;
BEGIN
    UPDATE group_versions
    SET user_list_version = user_list_version + p_list,
        user_info_version = user_info_version + p_info
    WHERE gid = p_gid
    RETURNING * INTO v;
    IF FOUND THEN
        RETURN v;
    END IF;
    INSERT INTO group_versions AS g (gid, user_list_version, user_info_version)
    VALUES (p_gid,
            (SELECT coalesce(max(e.version), 0) FROM group_events e WHERE e.gid = p_gid) + p_list,
            (SELECT coalesce(max(m.user_info_version), 0) FROM group_members m
             WHERE m.gid = p_gid) + p_info)
    ON CONFLICT (gid) DO UPDATE
        SET user_list_version = g.user_list_version + p_list,
            user_info_version = g.user_info_version + p_info
    RETURNING * INTO v;
    RETURN v;
END;
$$;

-- Moves a user's counters by the given steps; a missing row is created as for groups.
CREATE OR REPLACE FUNCTION herald_bump_user(
    p_uid bigint, p_group_list bigint, p_group_info bigint,
    p_friend_list bigint, p_friend_info bigint
) RETURNS user_versions
LANGUAGE plpgsql AS $$
DECLARE
    v user_versions;
BEGIN
    UPDATE user_versions
    SET group_list_version = group_list_version + p_group_list,
        group_info_version = group_info_version + p_group_info,
        friend_list_version = friend_list_version + p_friend_list,
        friend_info_version = friend_info_version + p_friend_info
    WHERE uid = p_uid
    RETURNING * INTO v;
    IF FOUND THEN
        RETURN v;
    END IF;
    INSERT INTO user_versions AS u
        (uid, group_list_version, group_info_version, friend_list_version, friend_info_version)
    VALUES (p_uid,
            greatest((SELECT max(m.group_list_version) FROM group_members m WHERE m.uid = p_uid),
                     (SELECT max(d.group_list_version) FROM group_departures d
                      WHERE d.uid = p_uid), 0) + p_group_list,
            (SELECT coalesce(max(m.group_info_version), 0) FROM group_members m
             WHERE m.uid = p_uid) + p_group_info,
            (SELECT coalesce(max(f.user_list_version), 0) FROM friends f
             WHERE f.uid = p_uid) + p_friend_list,
            (SELECT coalesce(max(f.user_info_version), 0) FROM friends f
             WHERE f.uid = p_uid) + p_friend_info)
    ON CONFLICT (uid) DO UPDATE
        SET group_list_version = u.group_list_version + p_group_list,
            group_info_version = u.group_info_version + p_group_info,
            friend_list_version = u.friend_list_version + p_friend_list,
            friend_info_version = u.friend_info_version + p_friend_info
    RETURNING * INTO v;
    RETURN v;
END;
$$;

-- The notices of a change: the current versions of the groups and users it touched.
-- Volatile, so it sees what the calling statement itself has just changed.
CREATE OR REPLACE FUNCTION herald_notices(p_gids bigint[], p_uids bigint[]) RETURNS jsonb[]
LANGUAGE sql AS $$
    SELECT coalesce(array_agg(n), '{}') FROM (
        SELECT jsonb_build_object('effect', 'group_versions', 'gid', v.gid,
                   'user_list_version', v.user_list_version,
                   'user_info_version', v.user_info_version) AS n
        FROM group_versions v
        WHERE v.gid = ANY (p_gids)
        UNION ALL
        SELECT jsonb_build_object('effect', 'user_versions', 'uid', u.uid,
                   'user_info_version', u.user_info_version,
                   'group_list_version', coalesce(v.group_list_version, 0),
                   'group_info_version', coalesce(v.group_info_version, 0),
                   'friend_list_version', coalesce(v.friend_list_version, 0),
                   'friend_info_version', coalesce(v.friend_info_version, 0))
        FROM users u
        LEFT JOIN user_versions v ON v.uid = u.uid
        WHERE u.uid = ANY (p_uids)
    ) notices
$$;
