-- A leaner outbox row for job events. The trigger that ends a job used to build each delivery's
-- JSON body and insert one statement per event; with a receiver configured that cost a sync
-- about 8% of its throughput (bench-webhooks), most of it the body building. Now it inserts
-- both events' rows in one statement, with the job's id and no body: a job-event body is built
-- from the finished job (and its catalog changes) when it is read to be sent or listed. A
-- finished job does not change, so every attempt still sends the same bytes. Rows written
-- before this migration, and `resource.stale` events, keep their stored body.

alter table webhook_deliveries
    add column job_id uuid,
    alter column payload drop not null,
    add constraint webhook_deliveries_has_body check (payload is not null or job_id is not null);

-- The body of a job event, as docs/webhooks.md shows it. A job pruned before its delivery was
-- sent leaves only what the row itself knows.
create function webhook_job_payload(event text, job uuid, created_at timestamptz)
returns jsonb language sql stable as $$
    select coalesce(
        (select case event
             when 'catalog.changed' then jsonb_build_object(
                 'type', event, 'timestamp', j.finished_at,
                 'data', jsonb_build_object(
                     'resource_id', j.resource_id, 'job_id', j.id,
                     'changes', s.changes, 'total', s.total))
             else jsonb_build_object(
                 'type', event, 'timestamp', j.finished_at,
                 'data', jsonb_build_object(
                     'job_id', j.id, 'resource_id', j.resource_id, 'state', j.state,
                     'attempts', j.attempts, 'error', j.error, 'error_class', j.error_class,
                     'finished_at', j.finished_at, 'stats', j.stats))
             end
         from jobs j
         left join lateral (
             select jsonb_object_agg(kind, n) as changes, sum(n) as total
             from (select kind, count(*) as n from catalog_changes
                   where catalog_changes.job_id = j.id group by kind) c
         ) s on event = 'catalog.changed'
         where j.id = job),
        jsonb_build_object('type', event, 'timestamp', created_at,
                           'data', jsonb_build_object('job_id', job, 'pruned', true)))
$$;

-- One statement per ended job: a row per subscribed hook and event, `catalog.changed` only
-- when the success wrote changes (an index probe, not a count).
create or replace function record_webhook_events() returns trigger language plpgsql as $$
begin
    insert into webhook_deliveries (id, tenant_id, webhook_id, event, job_id)
    select metasync_uuid_v7(), w.tenant_id, w.id, e.event, new.id
    from webhooks w
    cross join (values (case new.state when 'succeeded' then 'job.succeeded' else 'job.failed' end),
                       ('catalog.changed')) e (event)
    where w.tenant_id = new.tenant_id and w.enabled and e.event = any (w.events)
      and (e.event <> 'catalog.changed'
           or (new.state = 'succeeded'
               and exists (select 1 from catalog_changes c where c.job_id = new.id)));
    return null;
end
$$;
