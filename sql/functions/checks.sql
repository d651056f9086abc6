-- The checks a change makes before it changes anything: users active, the actor's role.

-- Refuses the change: raises the refusal p_key with its data (a JSON object) under p_code,
-- one of Herald's SQLSTATEs (HR400, HR403, HR404, HR409). The gateway words it for the
-- client (src/model/refusal.rs); the database holds no client-facing text.
CREATE OR REPLACE FUNCTION herald_refuse(p_code text, p_key text, p_data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = p_code, MESSAGE = p_key, DETAIL = p_data::text;
END;
$$;

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
        PERFORM herald_refuse('HR404', 'user_inactive', jsonb_build_object('uid', v_missing));
    END IF;
END;
$$;

-- The role of p_uid in p_gid, or NULL for a non-member.
CREATE OR REPLACE FUNCTION herald_role(p_gid bigint, p_uid bigint) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT role FROM group_members WHERE gid = p_gid AND uid = p_uid
$$;

-- Fails unless p_by (a user acting; NULL for the admin API) has one of p_roles in p_gid.
-- p_action is what p_by asked to do, for the refusal: {"action": <key>, ...its data}.
CREATE OR REPLACE FUNCTION herald_require_role(
    p_gid bigint, p_by bigint, p_roles text[], p_action jsonb
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
        PERFORM herald_refuse('HR403', 'not_member', jsonb_build_object('gid', p_gid));
    END IF;
    IF NOT v_role = ANY (p_roles) THEN
        PERFORM herald_refuse('HR403', 'role_required',
            jsonb_build_object('gid', p_gid, 'roles', to_jsonb(p_roles)) || p_action);
    END IF;
END;
$$;
