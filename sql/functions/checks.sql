-- The checks a change makes before it changes anything: users active, the actor's role.

-- Fails unless every one of p_uids is an active user.
CREATE OR REPLACE FUNCTION herald_require_active(p_uids bigint[]) RETURNS void
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

-- The role of p_uid in p_gid, or NULL for a non-member.
CREATE OR REPLACE FUNCTION herald_role(p_gid bigint, p_uid bigint) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT role FROM group_members WHERE gid = p_gid AND uid = p_uid
$$;

-- Fails unless p_by (a user acting; NULL for the admin API) has one of p_roles in p_gid.
CREATE OR REPLACE FUNCTION herald_require_role(
    p_gid bigint, p_by bigint, p_roles text[], p_action text
)
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
