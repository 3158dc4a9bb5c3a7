-- One row per leadership: the process that runs the fleet-wide maintenance duties (reap,
-- promote, reconcile, rescue, schedule, prune, queue gauges). A process elects itself or renews
-- its term with one guarded upsert (the row is free when expired, or already its own), and a
-- graceful shutdown deletes it so a successor takes over without waiting for the lease.
create table maintenance_leader (
    name text primary key,
    holder text not null,
    elected_at timestamptz not null default now(),
    expires_at timestamptz not null
);
