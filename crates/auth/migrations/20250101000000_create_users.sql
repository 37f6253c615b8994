-- The users table of the original system, with the constraints it lacked:
-- unique, non-null e-mail; non-null bcrypt hash; timestamps with time zone.
-- IF NOT EXISTS: a database migrated from the original system already has it.
CREATE TABLE IF NOT EXISTS users (
    id          serial PRIMARY KEY,
    email       text        NOT NULL UNIQUE,
    first_name  text        NOT NULL DEFAULT '',
    last_name   text        NOT NULL DEFAULT '',
    password    text        NOT NULL, -- bcrypt hash, never the password
    user_active integer     NOT NULL DEFAULT 1 CHECK (user_active IN (0, 1)),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
