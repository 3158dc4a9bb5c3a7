-- How workers secure their connections to a source (shared/src/tls.rs, `SourceTls`):
-- {"mode": "disable" | "prefer" | "require" | "verify-ca" | "verify-full", "ca": PEM or absent}.
-- Existing resources keep working as before on servers without TLS (`prefer`), and use TLS
-- where the server offers it.
alter table resources add column tls jsonb not null default '{"mode": "prefer"}';
