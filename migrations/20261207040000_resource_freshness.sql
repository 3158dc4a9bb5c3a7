-- Freshness on the resource: its last finished sync, its last success and the error of its
-- last failure, kept as columns so a resource read (or a freshness gauge over every resource)
-- never scans jobs.
--
-- A trigger keeps them, in the transaction that finishes the job: every path that ends a job
-- (success, failure, cancel, rescue of a lost cancelled job, the poison-job end) is an UPDATE
-- of `jobs.state`, and a trigger cannot be forgotten by the next such path.
alter table resources
    add column last_job_id uuid,
    add column last_job_state text,
    add column last_job_finished_at timestamptz,
    add column last_succeeded_at timestamptz,
    add column last_error text;

create function record_resource_freshness() returns trigger language plpgsql as $$
begin
    update resources r
    set last_job_id = new.id,
        last_job_state = new.state,
        last_job_finished_at = new.finished_at,
        last_succeeded_at = case when new.state = 'succeeded' then new.finished_at
                                 else r.last_succeeded_at end,
        -- A failure is kept until a later success clears it; a cancel leaves it.
        last_error = case when new.state = 'succeeded' then null
                          when new.state = 'failed' then new.error
                          else r.last_error end
    where r.id = new.resource_id
      -- Job ids are v7: a job that ends late never overwrites a newer job's outcome.
      and (r.last_job_id is null or r.last_job_id <= new.id);
    return null;
end
$$;

create trigger jobs_record_resource_freshness
    after update of state on jobs
    for each row
    when (new.state in ('succeeded', 'failed', 'cancelled') and old.state is distinct from new.state)
    execute function record_resource_freshness();

-- Resources registered before this migration: their newest finished job, once.
update resources r
set last_job_id = j.id, last_job_state = j.state, last_job_finished_at = j.finished_at,
    last_error = case when j.state = 'failed' then j.error end
from (select distinct on (resource_id) resource_id, id, state, finished_at, error
      from jobs where state in ('succeeded', 'failed', 'cancelled')
      order by resource_id, id desc) j
where r.id = j.resource_id;

update resources r
set last_succeeded_at = s.finished_at
from (select resource_id, max(finished_at) as finished_at
      from jobs where state = 'succeeded' group by resource_id) s
where r.id = s.resource_id;
