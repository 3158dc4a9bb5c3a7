-- A table's size is an estimate from page counts (PostgreSQL's `relpages`, MySQL's
-- `DATA_LENGTH + INDEX_LENGTH`), not a measured total: the name says so. It and `row_estimate`
-- are statistics, refreshed on every sync by one set-based update of the tables where they
-- moved; they are not part of the fingerprint and write no change history.
alter table catalog_tables rename column total_bytes to estimated_bytes;
