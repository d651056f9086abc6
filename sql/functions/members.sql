-- Membership changes inside a group writer, under the group's lock: joining and leaving.

-- Makes the active users among p_uids who are not members yet members with p_role. The
-- caller holds the group's lock. New members start caught up (last_ack = newest msgid), and
-- their profiles count as changed for the group.
CREATE OR REPLACE FUNCTION herald_add_members(
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
        INSERT INTO group_members (gid, uid, role, last_ack_msgid, last_read_msgid,
                                   group_list_version, group_info_version, user_info_version)
        SELECT p_gid, v_uid, p_role, g.last_msgid, g.last_msgid,
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

-- Removes p_uid from p_gid (the caller holds the group's lock): the event, the departure,
-- and an heir for an owner who leaves — the longest-standing admin, else the
-- longest-standing member; a group left empty is disbanded. No effects for a non-member.
CREATE OR REPLACE FUNCTION herald_remove_member(
    p_gid bigint, p_uid bigint, p_by bigint, p_reason text
)
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
