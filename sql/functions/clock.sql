-- The server's clock, as the timestamps clients see (milliseconds since the epoch).

CREATE OR REPLACE FUNCTION herald_now_ms() RETURNS bigint
LANGUAGE sql AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;
