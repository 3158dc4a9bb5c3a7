-- Password custody: each sealed password names the master key that sealed it (HPKE records
-- under a key id; rows from before carry 'legacy-aes' until `metasync-worker
-- rotate-master-key` re-seals them) and keeps a keyed fingerprint, so the API can tell whether a
-- re-sent password changed without opening anything.
alter table resources
    add column password_key_id text not null default 'legacy-aes',
    add column password_fingerprint bytea;
alter table resources alter column password_key_id drop default;
