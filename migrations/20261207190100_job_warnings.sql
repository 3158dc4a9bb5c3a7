-- What a succeeded sync could not read (a view definition hidden by missing privileges, a
-- listed database that does not exist), as a JSON array of `{code, message, database?,
-- objects?}`; written by the same statement that marks the job succeeded.
alter table jobs add column warnings jsonb not null default '[]';
