-- `resource.stale` webhook events, once per staleness episode: the last success a resource went
-- stale after is kept, so the fleet duty that finds stale resources notifies each one once.
alter table resources add column stale_notified_for timestamptz;
