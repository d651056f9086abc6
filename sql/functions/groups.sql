-- The group writers: lock, create, add and remove members, roles, info, disband.

-- Takes a live group's version lock; fails for a group that does not exist or was disbanded.
-- Checked again under the lock: a disband may have committed while we waited.
CREATE OR REPLACE FUNCTION herald_lock_group(p_gid bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM groups WHERE gid = p_gid AND NOT disbanded) THEN
        PERFORM herald_refuse('HR404', 'group_missing', jsonb_build_object('gid', p_gid));
    END IF;
    PERFORM herald_bump_group(p_gid, 0, 0);
    IF EXISTS (SELECT 1 FROM groups WHERE gid = p_gid AND disbanded) THEN
        PERFORM herald_refuse('HR404', 'group_missing', jsonb_build_object('gid', p_gid));
    END IF;
END;
$$;

-- The info of a group changed (name, description or owner; the caller updated the row and
-- holds the group's lock): every member's group_info_version moves. Returns the members.
CREATE OR REPLACE FUNCTION herald_group_info_changed(p_gid bigint) RETURNS bigint[]
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
CREATE OR REPLACE FUNCTION herald_disband(p_gid bigint, p_by bigint) RETURNS jsonb[]
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

-- Creates a group owned by p_owner with p_members (the owner always among them). p_by is the
-- user creating it, NULL for the admin API. A chosen gid that is taken is refused (HR409).
CREATE OR REPLACE FUNCTION herald_create_group(
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
        -- The admin API may have chosen gids the sequence has not reached yet: skip them.
        LOOP
            INSERT INTO groups (gid, name, description, owner_uid)
            VALUES (nextval('groups_gid_seq'), p_name, p_description, p_owner)
            ON CONFLICT DO NOTHING
            RETURNING gid INTO new_gid;
            EXIT WHEN new_gid IS NOT NULL;
        END LOOP;
    ELSE
        INSERT INTO groups (gid, name, description, owner_uid)
        VALUES (p_gid, p_name, p_description, p_owner)
        ON CONFLICT DO NOTHING
        RETURNING gid INTO new_gid;
        IF new_gid IS NULL THEN
            PERFORM herald_refuse('HR409', 'group_exists', jsonb_build_object('gid', p_gid));
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
CREATE OR REPLACE FUNCTION herald_add_to_group(p_gid bigint, p_uids bigint[], p_by bigint)
RETURNS jsonb[]
LANGUAGE plpgsql AS $$
DECLARE
    v_out jsonb[];
BEGIN
    PERFORM herald_lock_group(p_gid);
    PERFORM herald_require_role(p_gid, p_by, ARRAY['owner', 'admin'],
        '{"action": "add_members"}');
    PERFORM herald_require_active(p_uids);
    v_out := herald_add_members(p_gid, p_uids, 'member', p_by, true);
    RETURN v_out || herald_notices(ARRAY[p_gid],
        ARRAY(SELECT (e ->> 'uid')::bigint FROM unnest(v_out) AS e WHERE e ->> 'effect' = 'joined'));
END;
$$;

-- Removes p_uid from a group. A user acting (p_by) on themself quits; otherwise the owner
-- may remove anyone and an admin only members. NULL p_by is the admin API.
CREATE OR REPLACE FUNCTION herald_remove_from_group(p_gid bigint, p_uid bigint, p_by bigint)
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
            PERFORM herald_refuse('HR403', 'not_member', jsonb_build_object('gid', p_gid));
        END IF;
        v_reason := 'left';
    ELSIF p_by IS NOT NULL THEN
        v_target := herald_role(p_gid, p_uid);
        PERFORM herald_require_role(p_gid, p_by,
            CASE WHEN coalesce(v_target, 'member') = 'member'
                THEN ARRAY['owner', 'admin'] ELSE ARRAY['owner'] END,
            jsonb_build_object('action', 'remove_member', 'uid', p_uid, 'role', v_target));
        IF v_target = 'owner' THEN
            PERFORM herald_refuse('HR403', 'owner_not_removable', '{}');
        END IF;
    END IF;
    v_out := herald_remove_member(p_gid, p_uid, p_by, v_reason);
    RETURN v_out || herald_notices(ARRAY[p_gid], ARRAY[p_uid]);
END;
$$;

-- Makes a member admin or member again (owner only).
CREATE OR REPLACE FUNCTION herald_set_role(p_gid bigint, p_uid bigint, p_role text, p_by bigint)
RETURNS jsonb[]
LANGUAGE plpgsql AS $$
DECLARE
    v_current text;
    v_out jsonb[];
BEGIN
    PERFORM herald_lock_group(p_gid);
    PERFORM herald_require_role(p_gid, p_by, ARRAY['owner'], '{"action": "change_roles"}');
    v_current := herald_role(p_gid, p_uid);
    IF v_current IS NULL THEN
        PERFORM herald_refuse('HR404', 'target_not_member',
            jsonb_build_object('gid', p_gid, 'uid', p_uid));
    ELSIF v_current = 'owner' THEN
        PERFORM herald_refuse('HR403', 'owner_role_fixed', '{}');
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
CREATE OR REPLACE FUNCTION herald_update_group(
    p_gid bigint, p_name text, p_description text, p_by bigint
)
RETURNS jsonb[]
LANGUAGE plpgsql AS $$
DECLARE
    v_group groups;
    v_uids bigint[];
    v_out jsonb[];
BEGIN
    PERFORM herald_lock_group(p_gid);
    PERFORM herald_require_role(p_gid, p_by, ARRAY['owner', 'admin'],
        '{"action": "change_info"}');
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
CREATE OR REPLACE FUNCTION herald_disband_group(p_gid bigint, p_by bigint) RETURNS jsonb[]
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM herald_lock_group(p_gid);
    PERFORM herald_require_role(p_gid, p_by, ARRAY['owner'], '{"action": "disband"}');
    RETURN herald_disband(p_gid, p_by);
END;
$$;
