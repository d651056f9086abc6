-- The webhook outbox: events for the app's backend, written in the transaction of the change
-- they tell of (a group commit, a group event), so what was committed is told even across a
-- crash. Deliverers on every node claim rows, post them and delete them once the backend
-- answered 2xx. The id is the delivery id the backend drops duplicates by.
CREATE TABLE webhook_outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    -- json, not jsonb: message bodies reach the backend byte for byte as they were sent.
    data json NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    -- Not claimed again before this: a deliverer's lease, or a failed delivery's backoff.
    due_at timestamptz NOT NULL DEFAULT now()
);
