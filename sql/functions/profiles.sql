-- The profile writers: users created and their fields changed, with per-field versions.

-- Applies profile fields (NULL: unchanged) to existing users. Only fields whose value changes
-- get a version; each changed profile moves the user_info_version of every group the user is
-- in and of every user who has them as a friend.
CREATE OR REPLACE FUNCTION herald_update_profiles(
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
CREATE OR REPLACE FUNCTION herald_upsert_users(
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
