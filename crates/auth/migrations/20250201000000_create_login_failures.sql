-- Failed logins for the login throttle ([throttle] settings), one row each:
-- counted per e-mail address and per client address within a window. In the
-- database, so that every auth instance on it shares the counts and a restart
-- keeps them. Rows that have left the window are deleted as new failures are
-- written; a successful login deletes its account's rows.
CREATE TABLE login_failures (
    id        bigserial   PRIMARY KEY,
    email     text        NOT NULL, -- as the login normalises it, whether a user has it or not
    address   text        NOT NULL, -- the client's IP address; IPv6 as its /64
    failed_at timestamptz NOT NULL DEFAULT now()
);
-- The two counts: the newest failures of one account / one address.
CREATE INDEX login_failures_email ON login_failures (email, failed_at DESC);
CREATE INDEX login_failures_address ON login_failures (address, failed_at DESC);
-- Pruning: the oldest failures first.
CREATE INDEX login_failures_failed_at ON login_failures (failed_at);
