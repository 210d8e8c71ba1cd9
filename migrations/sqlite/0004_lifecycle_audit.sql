-- Dossier lifecycle, integration requests, ratings, proposals, and the audit trail.

-- every step of a dossier's life, for its timeline and history
create table dossier_event (
    id text primary key,
    dossier_id text not null references dossier (id),
    at bigint not null,
    -- 'transition', 'document', 'version', 'delegation', 'integration_request', 'rating'
    kind text not null,
    from_status text,
    to_status text,
    actor_id text not null references app_user (id),
    actor_role text not null,
    actor_name text not null,
    -- shown to the applicant
    note text,
    -- shown to staff and auditors only
    internal_note text,
    -- 'approved' or 'rejected', when concluded
    outcome text,
    document_id text
);
create index dossier_event_dossier on dossier_event (dossier_id, at);

alter table dossier add column outcome text;
-- when an officer took the dossier in charge (the legal deadline starts)
alter table dossier add column started_at bigint;
alter table dossier add column concluded_at bigint;

create table integration_request (
    id text primary key,
    dossier_id text not null references dossier (id),
    created_by text not null references app_user (id),
    created_at bigint not null,
    -- set when the dossier goes back to started
    closed_at bigint
);
create index integration_request_dossier on integration_request (dossier_id);

create table integration_item (
    request_id text not null references integration_request (id),
    position integer not null,
    description text not null,
    -- the document uploaded to satisfy it
    document_id text references document (id),
    primary key (request_id, position)
);

-- one rating per dossier, by its applicant, after conclusion
create table rating (
    dossier_id text primary key references dossier (id),
    user_id text not null references app_user (id),
    score integer not null check (score between 1 and 5),
    comment text,
    created_at bigint not null
);

create table proposal (
    id text primary key,
    tenant text not null,
    user_id text not null references app_user (id),
    -- 'proposal' or 'complaint'
    kind text not null,
    text text not null,
    created_at bigint not null
);

-- append-only, hash-chained record of every write and every read of content
create table audit_event (
    -- position in the chain, from 1, without gaps
    seq bigint primary key,
    at bigint not null,
    tenant text not null,
    actor_id text,
    actor_role text,
    -- e.g. 'dossier.read', 'document.download', 'search', 'dossier.transition'
    action text not null,
    -- 'dossier:<id>', 'document:<id>', 'search'
    target text not null,
    -- the dossier concerned, for dossier histories
    dossier_id text,
    -- 'ok', 'denied', 'not_found', 'error'
    outcome text not null,
    client_address text,
    -- JSON with action-specific details (query and hit count of a search, ...)
    detail text not null,
    -- hex SHA-256 of the previous row's hash and this row's canonical content
    prev_hash text not null,
    hash text not null
);
create index audit_event_dossier on audit_event (dossier_id, seq);

create trigger audit_event_no_update before update on audit_event
begin
    select raise(abort, 'audit_event is append-only');
end;
create trigger audit_event_no_delete before delete on audit_event
begin
    select raise(abort, 'audit_event is append-only');
end;
