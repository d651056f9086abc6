-- Versioned incremental sync (seed 002): profiles with per-field versions, group info and
-- roles, per-group event logs, friends, and conversations (seed 001).
--
-- Versions. Every version a client compares is a counter in a row of its scope, moved inside
-- the transaction that makes the change and under that row's lock: changes to one scope
-- commit in version order, so a reader that sees version N of a scope also sees every change
-- below N (gap-safe). Counter rows are created by upsert when missing, never assumed to exist
-- (seed 000). The scopes:
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
-- Writers. Each change is one function call, so it is one transaction and one round trip.
-- They refuse a change with their own SQLSTATEs, which the gateway reports to the client
-- with the message: HR400 bad request, HR403 forbidden, HR404 not found, HR409 conflict.
-- Functions return the change's effects (jsonb) for the gateway to publish: `event` (a group
-- event to push), `joined`/`left` (a member's sessions start/stop receiving a group),
-- `disbanded`, `deactivated`, `frame` (a frame for one user's sessions) and the new versions
-- to notify (`group_versions`, `user_versions`).
--
-- Lock order, which keeps writers free of deadlocks: users rows, then group_versions rows
-- by gid, then groups rows, then user_versions rows by uid.

ALTER TABLE users
    ADD COLUMN user_info_version bigint NOT NULL DEFAULT 0,
    ADD COLUMN nickname_version  bigint NOT NULL DEFAULT 0,
    ADD COLUMN avatar_version    bigint NOT NULL DEFAULT 0,
    ADD COLUMN signature_version bigint NOT NULL DEFAULT 0;

ALTER TABLE groups
    ADD COLUMN description  text NOT NULL DEFAULT '',
    -- The group's own info version: bumped by each change of name or description.
    ADD COLUMN info_version bigint NOT NULL DEFAULT 0,
    -- A disbanded group has no members and takes no more; its messages stay stored.
    ADD COLUMN disbanded    boolean NOT NULL DEFAULT false;

ALTER TABLE group_members
    -- The member's group_list_version when they joined.
    ADD COLUMN group_list_version bigint NOT NULL DEFAULT 0,
    -- The member's group_info_version when this group's info last changed.
    ADD COLUMN group_info_version bigint NOT NULL DEFAULT 0,
    -- The group's user_info_version when this member joined or last changed their profile.
    ADD COLUMN user_info_version  bigint NOT NULL DEFAULT 0;

CREATE TABLE group_versions (
    gid               bigint PRIMARY KEY,
    user_list_version bigint NOT NULL DEFAULT 0,
    user_info_version bigint NOT NULL DEFAULT 0
);

CREATE TABLE user_versions (
    uid                 bigint PRIMARY KEY,
    group_list_version  bigint NOT NULL DEFAULT 0,
    group_info_version  bigint NOT NULL DEFAULT 0,
    friend_list_version bigint NOT NULL DEFAULT 0,
    friend_info_version bigint NOT NULL DEFAULT 0
);

-- The groups a user left, stamped with their group_list_version then. Kept apart from
-- group_members, whose rows the hot paths (acks, membership checks) read; a rejoin deletes
-- the row.
CREATE TABLE group_departures (
    uid                bigint NOT NULL,
    gid                bigint NOT NULL,
    group_list_version bigint NOT NULL,
    PRIMARY KEY (uid, gid)
);

-- Each group's event log (seed 002's Event): `body` is the event as clients see it. Dense
-- versions from 1; old events are trimmed by the gateway (HERALD_EVENTS_KEPT).
CREATE TABLE group_events (
    gid     bigint NOT NULL,
    version bigint NOT NULL,
    body    jsonb NOT NULL,
    PRIMARY KEY (gid, version)
);

-- One row per direction, kept (inactive) when the friendship ends so incremental syncs can
-- report the removal.
CREATE TABLE friends (
    uid               bigint NOT NULL REFERENCES users (uid),
    friend_uid        bigint NOT NULL REFERENCES users (uid),
    active            boolean NOT NULL,
    -- uid's friend_list_version when this row last changed.
    user_list_version bigint NOT NULL,
    -- uid's friend_info_version when the friend's profile last changed (or they became friends).
    user_info_version bigint NOT NULL,
    PRIMARY KEY (uid, friend_uid)
);

CREATE INDEX friends_by_friend ON friends (friend_uid) WHERE active;

CREATE TABLE friend_requests (
    from_uid bigint NOT NULL REFERENCES users (uid),
    to_uid   bigint NOT NULL REFERENCES users (uid),
    ts       bigint NOT NULL,
    PRIMARY KEY (from_uid, to_uid)
);

CREATE INDEX friend_requests_to ON friend_requests (to_uid);

-- A user's conversations (seed 001): the unique constraint, not a check before the insert,
-- is what keeps concurrent creations to one row.
CREATE TABLE conversations (
    id           bigserial PRIMARY KEY,
    uid          bigint NOT NULL REFERENCES users (uid),
    channel_id   text NOT NULL,
    channel_type smallint NOT NULL,
    created_at   bigint NOT NULL,
    -- The group of a group channel (channel_type 2), for its unread count.
    gid          bigint,
    UNIQUE (uid, channel_id, channel_type)
);

CREATE FUNCTION herald_now_ms() RETURNS bigint
LANGUAGE sql AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

-- Moves a group's counters by the given steps; with steps of 0 it only takes the row's lock.
-- A missing row is created by the upsert (seed 000), starting from the highest versions the
-- group's rows are stamped with, so a client's versions never run ahead of the server's.
CREATE FUNCTION herald_bump_group(p_gid bigint, p_list bigint, p_info bigint)
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
CREATE FUNCTION herald_bump_user(
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
CREATE FUNCTION herald_notices(p_gids bigint[], p_uids bigint[]) RETURNS jsonb[]
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

-- Appends an event to a group's log as its next version; returns it as an effect carrying
-- the frame to push.
CREATE FUNCTION herald_event(p_gid bigint, p_event jsonb) RETURNS jsonb
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
    RETURN jsonb_build_object('effect', 'event', 'gid', p_gid,
                              'frame', v_event || '{"type": "event"}');
END;
$$;

-- Fails unless every one of p_uids is an active user.
CREATE FUNCTION herald_require_active(p_uids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_missing bigint;
BEGIN
    SELECT i.uid INTO v_missing
    FROM unnest(p_uids) AS i (uid)
    WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.uid = i.uid AND u.active)
    ORDER BY i.uid
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'HR404',
            MESSAGE = format('user %s does not exist or is deactivated', v_missing);
    END IF;
END;
$$;

-- Takes a live group's version lock; fails for a group that does not exist or was disbanded.
-- Checked again under the lock: a disband may have committed while we waited.
CREATE FUNCTION herald_lock_group(p_gid bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM groups WHERE gid = p_gid AND NOT disbanded) THEN
        RAISE EXCEPTION USING ERRCODE = 'HR404',
            MESSAGE = format('group %s does not exist', p_gid);
    END IF;
    PERFORM herald_bump_group(p_gid, 0, 0);
    IF EXISTS (SELECT 1 FROM groups WHERE gid = p_gid AND disbanded) THEN
        RAISE EXCEPTION USING ERRCODE = 'HR404',
            MESSAGE = format('group %s does not exist', p_gid);
    END IF;
END;
$$;

-- The role of p_uid in p_gid, or NULL for a non-member.
CREATE FUNCTION herald_role(p_gid bigint, p_uid bigint) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT role FROM group_members WHERE gid = p_gid AND uid = p_uid
$$;

-- Fails unless p_by (a user acting; NULL for the admin API) has one of p_roles in p_gid.
CREATE FUNCTION herald_require_role(p_gid bigint, p_by bigint, p_roles text[], p_action text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_role text;
BEGIN
    IF p_by IS NULL THEN
        RETURN;
    END IF;
    v_role := herald_role(p_gid, p_by);
    IF v_role IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'HR403',
            MESSAGE = format('not a member of group %s', p_gid);
    END IF;
    IF NOT v_role = ANY (p_roles) THEN
        RAISE EXCEPTION USING ERRCODE = 'HR403',
            MESSAGE = format('only the %s of group %s may %s',
                             array_to_string(p_roles, ' or '), p_gid, p_action);
    END IF;
END;
$$;

-- Makes the active users among p_uids who are not members yet members with p_role. The
-- caller holds the group's lock. New members start caught up (last_ack = newest msgid), and
-- their profiles count as changed for the group.
CREATE FUNCTION herald_add_members(
    p_gid bigint, p_uids bigint[], p_role text, p_by bigint, p_announce boolean
) RETURNS jsonb[]
LANGUAGE plpgsql AS $$
DECLARE
    v_uid bigint;
    v_group group_versions;
    v_user user_versions;
    v_out jsonb[] := '{}';
BEGIN
    FOR v_uid IN
        SELECT DISTINCT i.uid FROM unnest(p_uids) AS i (uid)
        WHERE NOT EXISTS (SELECT 1 FROM group_members m WHERE m.gid = p_gid AND m.uid = i.uid)
        ORDER BY i.uid
    LOOP
        v_group := herald_bump_group(p_gid, 0, 1);
        v_user := herald_bump_user(v_uid, 1, 0, 0, 0);
        INSERT INTO group_members (gid, uid, role, last_ack_msgid,
                                   group_list_version, group_info_version, user_info_version)
        SELECT p_gid, v_uid, p_role, g.last_msgid,
               v_user.group_list_version, v_user.group_info_version, v_group.user_info_version
        FROM groups g WHERE g.gid = p_gid;
        DELETE FROM group_departures WHERE uid = v_uid AND gid = p_gid;
        v_out := v_out || jsonb_build_object('effect', 'joined', 'gid', p_gid, 'uid', v_uid);
        IF p_announce THEN
            v_out := v_out || herald_event(p_gid, jsonb_build_object(
                'event', 'member_added', 'uid', v_uid, 'role', p_role, 'by', p_by));
        END IF;
    END LOOP;
    RETURN v_out;
END;
$$;

-- The info of a group changed (name, description or owner; the caller updated the row and
-- holds the group's lock): every member's group_info_version moves. Returns the members.
CREATE FUNCTION herald_group_info_changed(p_gid bigint) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    v_uids bigint[];
    v_uid bigint;
    v_user user_versions;
BEGIN
    SELECT coalesce(array_agg(uid ORDER BY uid), '{}') INTO v_uids
    FROM group_members WHERE gid = p_gid;
    FOREACH v_uid IN ARRAY v_uids LOOP
        v_user := herald_bump_user(v_uid, 0, 1, 0, 0);
        UPDATE group_members SET group_info_version = v_user.group_info_version
        WHERE gid = p_gid AND uid = v_uid;
    END LOOP;
    RETURN v_uids;
END;
$$;

-- Ends a group: marks it disbanded and removes every member. The caller holds its lock.
CREATE FUNCTION herald_disband(p_gid bigint, p_by bigint) RETURNS jsonb[]
LANGUAGE plpgsql AS $$
DECLARE
    v_uids bigint[];
    v_uid bigint;
    v_user user_versions;
    v_out jsonb[];
BEGIN
    UPDATE groups SET disbanded = true WHERE gid = p_gid;
    v_out := ARRAY[herald_event(p_gid, jsonb_build_object('event', 'group_disbanded', 'by', p_by)),
                   jsonb_build_object('effect', 'disbanded', 'gid', p_gid)];
    WITH gone AS (DELETE FROM group_members WHERE gid = p_gid RETURNING uid)
    SELECT coalesce(array_agg(uid ORDER BY uid), '{}') INTO v_uids FROM gone;
    FOREACH v_uid IN ARRAY v_uids LOOP
        v_user := herald_bump_user(v_uid, 1, 0, 0, 0);
        INSERT INTO group_departures (uid, gid, group_list_version)
        VALUES (v_uid, p_gid, v_user.group_list_version)
        ON CONFLICT (uid, gid) DO UPDATE SET group_list_version = excluded.group_list_version;
    END LOOP;
    RETURN v_out || herald_notices(ARRAY[p_gid], v_uids);
END;
$$;

-- Removes p_uid from p_gid (the caller holds the group's lock): the event, the departure,
-- and an heir for an owner who leaves — the longest-standing admin, else the
-- longest-standing member; a group left empty is disbanded. No effects for a non-member.
CREATE FUNCTION herald_remove_member(p_gid bigint, p_uid bigint, p_by bigint, p_reason text)
RETURNS jsonb[]
LANGUAGE plpgsql AS $$
DECLARE
    v_role text;
    v_heir bigint;
    v_members bigint[];
    v_user user_versions;
    v_out jsonb[];
BEGIN
    DELETE FROM group_members WHERE gid = p_gid AND uid = p_uid RETURNING role INTO v_role;
    IF NOT FOUND THEN
        RETURN '{}';
    END IF;
    v_out := ARRAY[
        herald_event(p_gid, jsonb_build_object(
            'event', 'member_removed', 'uid', p_uid, 'by', p_by, 'reason', p_reason)),
        jsonb_build_object('effect', 'left', 'gid', p_gid, 'uid', p_uid)];
    IF v_role = 'owner' THEN
        SELECT uid INTO v_heir FROM group_members
        WHERE gid = p_gid
        ORDER BY role = 'admin' DESC, joined_at, uid
        LIMIT 1;
        IF v_heir IS NULL THEN
            v_out := v_out || herald_disband(p_gid, NULL);
        ELSE
            UPDATE group_members SET role = 'owner' WHERE gid = p_gid AND uid = v_heir;
            UPDATE groups SET owner_uid = v_heir, info_version = info_version + 1
            WHERE gid = p_gid;
            v_out := v_out || herald_event(p_gid, jsonb_build_object(
                'event', 'role_changed', 'uid', v_heir, 'role', 'owner'));
            -- The owner is part of the group's info, in every member's group list.
            v_members := herald_group_info_changed(p_gid);
            v_out := v_out || herald_notices('{}', v_members);
        END IF;
    END IF;
    v_user := herald_bump_user(p_uid, 1, 0, 0, 0);
    INSERT INTO group_departures (uid, gid, group_list_version)
    VALUES (p_uid, p_gid, v_user.group_list_version)
    ON CONFLICT (uid, gid) DO UPDATE SET group_list_version = excluded.group_list_version;
    RETURN v_out;
END;
$$;

-- ---- Groups ----

-- Creates a group owned by p_owner with p_members (the owner always among them). p_by is the
-- user creating it, NULL for the admin API. Fails with unique_violation for a taken gid.
CREATE FUNCTION herald_create_group(
    p_gid bigint, p_name text, p_description text, p_owner bigint, p_members bigint[],
    p_by bigint, OUT new_gid bigint, OUT effects jsonb[]
)
LANGUAGE plpgsql AS $$
DECLARE
    v_everyone bigint[];
BEGIN
    SELECT array_agg(DISTINCT u ORDER BY u) INTO v_everyone
    FROM unnest(p_members || p_owner) AS u;
    PERFORM herald_require_active(v_everyone);
    IF p_gid IS NULL THEN
        INSERT INTO groups (name, description, owner_uid) VALUES (p_name, p_description, p_owner)
        RETURNING gid INTO new_gid;
    ELSE
        INSERT INTO groups (gid, name, description, owner_uid)
        VALUES (p_gid, p_name, p_description, p_owner)
        ON CONFLICT DO NOTHING
        RETURNING gid INTO new_gid;
        IF new_gid IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'HR409',
                MESSAGE = format('group %s already exists', p_gid);
        END IF;
    END IF;
    PERFORM herald_bump_group(new_gid, 0, 0);
    effects := herald_add_members(new_gid, ARRAY[p_owner], 'owner', p_by, false);
    effects := effects || herald_add_members(new_gid, v_everyone, 'member', p_by, false);
    effects := effects || herald_event(new_gid, jsonb_build_object(
        'event', 'group_created', 'by', p_by, 'name', p_name,
        'description', p_description, 'owner', p_owner, 'uids', to_jsonb(v_everyone)));
    effects := effects || herald_notices(ARRAY[new_gid], v_everyone);
END;
$$;

-- Adds members (p_by must be owner or admin; NULL for the admin API). Returns the effects;
-- the uids added are those of its `joined` effects.
CREATE FUNCTION herald_add_to_group(p_gid bigint, p_uids bigint[], p_by bigint)
RETURNS jsonb[]
LANGUAGE plpgsql AS $$
DECLARE
    v_out jsonb[];
BEGIN
    PERFORM herald_lock_group(p_gid);
    PERFORM herald_require_role(p_gid, p_by, ARRAY['owner', 'admin'], 'add members');
    PERFORM herald_require_active(p_uids);
    v_out := herald_add_members(p_gid, p_uids, 'member', p_by, true);
    RETURN v_out || herald_notices(ARRAY[p_gid],
        ARRAY(SELECT (e ->> 'uid')::bigint FROM unnest(v_out) AS e WHERE e ->> 'effect' = 'joined'));
END;
$$;

-- Removes p_uid from a group. A user acting (p_by) on themself quits; otherwise the owner
-- may remove anyone and an admin only members. NULL p_by is the admin API.
CREATE FUNCTION herald_remove_from_group(p_gid bigint, p_uid bigint, p_by bigint)
RETURNS jsonb[]
LANGUAGE plpgsql AS $$
DECLARE
    v_target text;
    v_reason text := 'removed';
    v_out jsonb[];
BEGIN
    PERFORM herald_lock_group(p_gid);
    IF p_by = p_uid THEN
        IF herald_role(p_gid, p_uid) IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'HR403',
                MESSAGE = format('not a member of group %s', p_gid);
        END IF;
        v_reason := 'left';
    ELSIF p_by IS NOT NULL THEN
        v_target := herald_role(p_gid, p_uid);
        PERFORM herald_require_role(p_gid, p_by,
            CASE WHEN coalesce(v_target, 'member') = 'member'
                THEN ARRAY['owner', 'admin'] ELSE ARRAY['owner'] END,
            format('remove %s %s', coalesce(v_target, 'user'), p_uid));
        IF v_target = 'owner' THEN
            RAISE EXCEPTION USING ERRCODE = 'HR403',
                MESSAGE = 'the owner cannot remove themself; quit instead';
        END IF;
    END IF;
    v_out := herald_remove_member(p_gid, p_uid, p_by, v_reason);
    RETURN v_out || herald_notices(ARRAY[p_gid], ARRAY[p_uid]);
END;
$$;

-- Makes a member admin or member again (owner only).
CREATE FUNCTION herald_set_role(p_gid bigint, p_uid bigint, p_role text, p_by bigint)
RETURNS jsonb[]
LANGUAGE plpgsql AS $$
DECLARE
    v_current text;
    v_out jsonb[];
BEGIN
    PERFORM herald_lock_group(p_gid);
    PERFORM herald_require_role(p_gid, p_by, ARRAY['owner'], 'change roles');
    v_current := herald_role(p_gid, p_uid);
    IF v_current IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'HR404',
            MESSAGE = format('user %s is not a member of group %s', p_uid, p_gid);
    ELSIF v_current = 'owner' THEN
        RAISE EXCEPTION USING ERRCODE = 'HR403',
            MESSAGE = 'the owner''s role changes only when they quit';
    ELSIF v_current = p_role THEN
        RETURN '{}';
    END IF;
    UPDATE group_members SET role = p_role WHERE gid = p_gid AND uid = p_uid;
    v_out := ARRAY[herald_event(p_gid, jsonb_build_object(
        'event', 'role_changed', 'uid', p_uid, 'role', p_role, 'by', p_by))];
    RETURN v_out || herald_notices(ARRAY[p_gid], '{}');
END;
$$;

-- Changes a group's name and/or description (NULL: unchanged); owner or admin. Every member's
-- group_info_version moves. Nothing moves when nothing changes.
CREATE FUNCTION herald_update_group(p_gid bigint, p_name text, p_description text, p_by bigint)
RETURNS jsonb[]
LANGUAGE plpgsql AS $$
DECLARE
    v_group groups;
    v_uids bigint[];
    v_out jsonb[];
BEGIN
    PERFORM herald_lock_group(p_gid);
    PERFORM herald_require_role(p_gid, p_by, ARRAY['owner', 'admin'], 'change its info');
    UPDATE groups
    SET name = coalesce(p_name, name),
        description = coalesce(p_description, description),
        info_version = info_version + 1
    WHERE gid = p_gid
      AND (coalesce(p_name, name), coalesce(p_description, description))
          IS DISTINCT FROM (name, description)
    RETURNING * INTO v_group;
    IF NOT FOUND THEN
        RETURN '{}';
    END IF;
    v_uids := herald_group_info_changed(p_gid);
    v_out := ARRAY[herald_event(p_gid, jsonb_build_object(
        'event', 'group_updated', 'by', p_by,
        'name', v_group.name, 'description', v_group.description))];
    RETURN v_out || herald_notices(ARRAY[p_gid], v_uids);
END;
$$;

-- Disbands a group (owner only; NULL p_by is the admin API).
CREATE FUNCTION herald_disband_group(p_gid bigint, p_by bigint) RETURNS jsonb[]
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM herald_lock_group(p_gid);
    PERFORM herald_require_role(p_gid, p_by, ARRAY['owner'], 'disband it');
    RETURN herald_disband(p_gid, p_by);
END;
$$;

-- ---- Profiles ----

-- Applies profile fields (NULL: unchanged) to existing users. Only fields whose value changes
-- get a version; each changed profile moves the user_info_version of every group the user is
-- in and of every user who has them as a friend.
CREATE FUNCTION herald_update_profiles(
    p_uids bigint[], p_nicknames text[], p_avatars text[], p_signatures text[]
) RETURNS jsonb[]
LANGUAGE plpgsql AS $$
DECLARE
    v_uid bigint;
    v_changed bigint[] := '{}';
    v_gids bigint[] := '{}';
    v_fans bigint[] := '{}';
    v_gid bigint;
    v_group group_versions;
    v_user user_versions;
BEGIN
    FOR v_uid IN
        WITH input AS (
            SELECT DISTINCT ON (i.uid) i.*
            FROM unnest(p_uids, p_nicknames, p_avatars, p_signatures)
                AS i (uid, nickname, avatar, signature)
            ORDER BY i.uid
        )
        UPDATE users u
        SET user_info_version = u.user_info_version + 1,
            nickname = coalesce(i.nickname, u.nickname),
            avatar = coalesce(i.avatar, u.avatar),
            signature = coalesce(i.signature, u.signature),
            nickname_version = CASE WHEN i.nickname <> u.nickname
                THEN u.user_info_version + 1 ELSE u.nickname_version END,
            avatar_version = CASE WHEN i.avatar <> u.avatar
                THEN u.user_info_version + 1 ELSE u.avatar_version END,
            signature_version = CASE WHEN i.signature <> u.signature
                THEN u.user_info_version + 1 ELSE u.signature_version END
        FROM input i
        WHERE u.uid = i.uid
          AND (i.nickname <> u.nickname OR i.avatar <> u.avatar OR i.signature <> u.signature)
        RETURNING u.uid
    LOOP
        v_changed := v_changed || v_uid;
    END LOOP;
    IF cardinality(v_changed) = 0 THEN
        RETURN '{}';
    END IF;

    FOR v_gid IN
        SELECT DISTINCT m.gid FROM group_members m WHERE m.uid = ANY (v_changed) ORDER BY m.gid
    LOOP
        v_group := herald_bump_group(v_gid, 0, 1);
        UPDATE group_members SET user_info_version = v_group.user_info_version
        WHERE gid = v_gid AND uid = ANY (v_changed);
        v_gids := v_gids || v_gid;
    END LOOP;

    FOR v_uid IN
        SELECT DISTINCT f.uid FROM friends f
        WHERE f.friend_uid = ANY (v_changed) AND f.active
        ORDER BY f.uid
    LOOP
        v_user := herald_bump_user(v_uid, 0, 0, 0, 1);
        UPDATE friends SET user_info_version = v_user.friend_info_version
        WHERE uid = v_uid AND friend_uid = ANY (v_changed) AND active;
        v_fans := v_fans || v_uid;
    END LOOP;

    RETURN herald_notices(v_gids, v_changed || v_fans);
END;
$$;

-- Creates the users not yet created and applies the profile fields given to the others.
CREATE FUNCTION herald_upsert_users(
    p_uids bigint[], p_nicknames text[], p_avatars text[], p_signatures text[]
) RETURNS jsonb[]
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO users (uid, nickname, avatar, signature)
    SELECT uid, coalesce(nickname, ''), coalesce(avatar, ''), coalesce(signature, '')
    FROM unnest(p_uids, p_nicknames, p_avatars, p_signatures)
        AS i (uid, nickname, avatar, signature)
    ON CONFLICT (uid) DO NOTHING;
    RETURN herald_update_profiles(p_uids, p_nicknames, p_avatars, p_signatures);
END;
$$;

-- ---- Friends ----

-- Sets the friendship of two users on (both directions), moving both users' friend list
-- versions, and drops their requests. The caller holds both users' version locks.
CREATE FUNCTION herald_set_friends(p_a bigint, p_b bigint, p_active boolean) RETURNS jsonb[]
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
CREATE FUNCTION herald_lock_pair(p_a bigint, p_b bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM herald_bump_user(least(p_a, p_b), 0, 0, 0, 0);
    PERFORM herald_bump_user(greatest(p_a, p_b), 0, 0, 0, 0);
END;
$$;

-- p_from asks p_to to be friends. They become friends when p_to had asked too; otherwise
-- the request is kept (once) and p_to's sessions are told. Returns 'friends' or 'requested'.
CREATE FUNCTION herald_request_friend(
    p_from bigint, p_to bigint, OUT status text, OUT effects jsonb[]
)
LANGUAGE plpgsql AS $$
DECLARE
    v_ts bigint := herald_now_ms();
BEGIN
    IF p_from = p_to THEN
        RAISE EXCEPTION USING ERRCODE = 'HR400',
            MESSAGE = 'a user cannot befriend themself';
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
            effects := ARRAY[jsonb_build_object('effect', 'frame', 'uid', p_to, 'frame',
                jsonb_build_object('type', 'friend_request', 'from', p_from, 'ts', v_ts))];
        END IF;
    END IF;
END;
$$;

-- Makes two users friends (the admin API) or ends their friendship or requests (either).
CREATE FUNCTION herald_befriend(p_a bigint, p_b bigint, p_active boolean) RETURNS jsonb[]
LANGUAGE plpgsql AS $$
BEGIN
    IF p_a = p_b THEN
        RAISE EXCEPTION USING ERRCODE = 'HR400',
            MESSAGE = 'a user cannot befriend themself';
    END IF;
    IF p_active THEN
        PERFORM herald_require_active(ARRAY[p_a, p_b]);
    END IF;
    PERFORM herald_lock_pair(p_a, p_b);
    RETURN herald_set_friends(p_a, p_b, p_active);
END;
$$;

-- ---- Deactivation (seed 003) ----

-- Deactivates a user: they leave every group exactly as a removal would (reason
-- deactivated, ownership passed on) and every friend list, and their requests are dropped.
-- Repeating it only closes their sessions again.
CREATE FUNCTION herald_deactivate(p_uid bigint) RETURNS jsonb[]
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
        RAISE EXCEPTION USING ERRCODE = 'HR404',
            MESSAGE = format('user %s does not exist', p_uid);
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

-- Drops the events of each group older than its newest p_keep; returns how many went.
CREATE FUNCTION herald_trim_events(p_keep bigint) RETURNS bigint
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM group_events e
        USING group_versions v
        WHERE e.gid = v.gid AND e.version <= v.user_list_version - p_keep
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;
