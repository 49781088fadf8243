-- Depot metadata schema, version 1 (Postgres).
--
-- Forward-only: never edit a migration that has shipped; add the next number instead.
-- Applied by `depot migrate` (and at start with a postgres:// metadata URL), each file in its own
-- transaction, under an advisory lock, recorded in depot_schema_migrations.
--
-- u64 ids and offsets from the broker are stored as BIGINT; the store refuses values above
-- i64::MAX rather than wrapping them. Secrets are stored only as SHA-256 digests (BYTEA).
-- Key text columns use the "C" collation: orderings are bytewise (as in the SQLite store) and do
-- not depend on the server's locale.

CREATE TABLE users (
    username      TEXT    COLLATE "C" NOT NULL PRIMARY KEY,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT    COLLATE "C" NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    owner      TEXT    COLLATE "C" NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    digest     BYTEA   NOT NULL UNIQUE,
    scopes     TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT
);
CREATE INDEX api_keys_by_created ON api_keys (created_at, id);
CREATE INDEX api_keys_by_owner ON api_keys (owner, created_at, id);

CREATE TABLE refresh_tokens (
    digest     BYTEA   NOT NULL PRIMARY KEY,
    family     TEXT    COLLATE "C" NOT NULL,
    username   TEXT    COLLATE "C" NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    issued_at  BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    spent      BOOLEAN NOT NULL DEFAULT FALSE,
    revoked    BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_by_username ON refresh_tokens (username);

CREATE TABLE audit_log (
    id     BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     BIGINT  NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT    NOT NULL,
    -- JSON text, kept verbatim (jsonb would reorder keys and refuse \u0000).
    detail TEXT    NOT NULL
);

CREATE TABLE dead_letters (
    station    TEXT    COLLATE "C" NOT NULL,
    grp        TEXT    COLLATE "C" NOT NULL,
    "offset"   BIGINT  NOT NULL,
    id         BIGINT  NOT NULL,
    reason     TEXT    COLLATE "C" NOT NULL,
    attempts   BIGINT  NOT NULL,
    last_error TEXT,
    dead_at    BIGINT  NOT NULL,
    PRIMARY KEY (station, grp, "offset")
);
-- One index per list shape, each ending in (dead_at, id) so pages come out of the index in order
-- and the keyset condition (dead_at, id) > (..) is an index condition.
CREATE INDEX dead_letters_by_time ON dead_letters (station, dead_at, id);
CREATE INDEX dead_letters_by_group ON dead_letters (station, grp, dead_at, id);
CREATE INDEX dead_letters_by_reason ON dead_letters (station, reason, dead_at, id);
CREATE INDEX dead_letters_by_id ON dead_letters (station, id);
