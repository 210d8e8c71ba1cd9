-- Notifications from start to conclusion: confirmed contacts, per-event preferences, the
-- recipient and step of each message, tasks to notify by post, and the daily digest's runs.

-- a contact is used only once its owner proved it with a code sent there
alter table app_user add column email_confirmed_at bigint;
alter table app_user add column phone_confirmed_at bigint;
-- an activation code reached the account's e-mail: those addresses are proven
update app_user set email_confirmed_at = created_at
    where email is not null and exists (select 1 from api_token t where t.user_id = app_user.id);

-- who a message is for and what caused it (null for messages to an address, not a user)
alter table notification_outbox add column user_id text;
alter table notification_outbox add column dossier_id text;
-- the dossier step (dossier_event.id) it reports
alter table notification_outbox add column step_id text;
alter table notification_outbox add column event text;
create index notification_outbox_user on notification_outbox (user_id, created_at);
create index notification_outbox_dossier on notification_outbox (dossier_id, created_at);
create index notification_outbox_failed on notification_outbox (status, created_at);

-- a user's choice per kind of event and channel; no row: the channel is on
create table notification_preference (
    user_id text not null references app_user (id),
    event text not null,
    channel text not null check (channel in ('email', 'sms', 'app_io')),
    enabled integer not null,
    primary key (user_id, event, channel)
);

-- a new e-mail address or mobile number waiting for the code sent there
create table contact_confirmation (
    id text primary key,
    user_id text not null references app_user (id),
    channel text not null check (channel in ('email', 'sms')),
    address text not null,
    code_hash text not null,
    created_at bigint not null,
    expires_at bigint not null,
    attempts integer not null default 0,
    used_at bigint
);
create index contact_confirmation_user on contact_confirmation (user_id, created_at);

-- a notice the law requires that no channel could carry: the office sends it by post
create table postal_task (
    id text primary key,
    tenant text not null,
    dossier_id text not null references dossier (id),
    office_code text not null,
    step_id text,
    event text not null,
    created_at bigint not null,
    done_at bigint,
    done_by text
);
create index postal_task_open on postal_task (tenant, office_code, done_at, created_at);

-- one daily digest per municipality and day, whichever node writes it first
create table digest_run (
    tenant text not null,
    day text not null,
    created_at bigint not null,
    primary key (tenant, day)
);
