-- Search matches comments too (`GET /v1/search`): trigram indexes serve `comment ilike '%q%'`
-- as the name indexes serve names. Most comments are null, which GIN does not index.
create index catalog_tables_comment_trgm on catalog_tables using gin (comment gin_trgm_ops);
create index catalog_columns_comment_trgm on catalog_columns using gin (comment gin_trgm_ops);
