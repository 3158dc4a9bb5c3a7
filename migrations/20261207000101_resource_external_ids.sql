-- A platform's system service pushes its resource definitions through the internal API under
-- its own key (`PUT /internal/v1/tenants/{tenant}/resources/{external_id}`); resources created
-- through /v1 have none. Nulls are distinct, so only set ids are unique per tenant.
alter table resources add column external_id text;
alter table resources add constraint resources_tenant_id_external_id_key
    unique (tenant_id, external_id);
