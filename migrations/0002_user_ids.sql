-- Depot metadata schema, version 2 (Postgres): immutable user ids.
--
-- A user gets a random id that is never reused. Access tokens name it in `sub`, and API keys
-- record their owner's id, so nothing issued to a deleted user works for a later user of the same
-- name. Existing users get a fresh id here (their older access tokens, which name them by
-- username, stop working: they last 15 minutes by default).

ALTER TABLE users ADD COLUMN id TEXT COLLATE "C";
UPDATE users SET id = 'usr_' || substr(md5(random()::text || clock_timestamp()::text || username), 1, 24);
ALTER TABLE users ALTER COLUMN id SET NOT NULL;
CREATE UNIQUE INDEX users_by_id ON users (id);

ALTER TABLE api_keys ADD COLUMN owner_id TEXT COLLATE "C";
UPDATE api_keys SET owner_id = users.id FROM users WHERE users.username = api_keys.owner;
ALTER TABLE api_keys ALTER COLUMN owner_id SET NOT NULL;
