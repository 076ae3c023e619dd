-- Who signed in, viewed, played, exported, acknowledged, corrected or deleted which call, and when.
-- Append-only: storage/access.py only ever INSERTs here; no query or action of storage.queries
-- updates or deletes a row, and an erasure (erase_calls) removes a call from every table but this
-- one (what remains is our own call id and the action, never the call's content or its customer).
CREATE SEQUENCE audit_ids;
CREATE TABLE audit_log (
    audit_id   BIGINT PRIMARY KEY DEFAULT nextval('audit_ids'),
    logged_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,   -- UTC
    user_name  VARCHAR,                  -- the dashboard user; NULL for a service or the CLI
    role       VARCHAR NOT NULL,         -- admin | supervisor | coach | analyst | agent | service
    action     VARCHAR NOT NULL,         -- sign_in | view | playback | export | acknowledge | feedback | delete
    call_id    VARCHAR,
    detail     VARCHAR,
    client     VARCHAR                   -- the address the dashboard saw the user at
);
CREATE INDEX audit_logged_at ON audit_log (logged_at);
