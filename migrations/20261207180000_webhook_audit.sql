-- Creating, changing and deleting a webhook is recorded in the audit log (never its secret).
alter table audit_events drop constraint audit_events_action_check;
alter table audit_events add constraint audit_events_action_check check (action in (
    'resource.create', 'resource.update', 'resource.delete', 'resource.sync', 'resource.test',
    'batch.create', 'job.cancel', 'job.retry',
    'webhook.create', 'webhook.update', 'webhook.delete'));
alter table audit_events drop constraint audit_events_object_type_check;
alter table audit_events add constraint audit_events_object_type_check
    check (object_type in ('resource', 'job', 'batch', 'webhook'));
