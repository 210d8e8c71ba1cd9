-- Identities: contact data of citizens who registered online, front-office staff, online
-- registration with activation codes, and the notification outbox the notifier reads.
alter table app_user add column email text;
alter table app_user add column phone text;
-- 1 for front-office ("polifunzionale") staff, who handle the dossiers of every office
alter table app_user add column all_offices integer not null default 0;

create table registration (
    id text primary key,
    tenant text not null,
    codice_fiscale text not null,
    email text not null,
    phone text,
    -- hex SHA-256 of the activation code; the code itself only goes out through the outbox
    code_hash text not null,
    created_at bigint not null,
    expires_at bigint not null,
    -- failed activation attempts; the code dies after a few
    attempts integer not null default 0,
    used_at bigint,
    -- network address the registration came from, for rate limiting
    client_address text not null
);
create index registration_email on registration (tenant, email, created_at);
create index registration_address on registration (client_address, created_at);

-- messages to send; a separate notifier delivers them and sets sent_at
create table notification_outbox (
    id text primary key,
    tenant text not null,
    -- 'email' or 'sms'
    channel text not null,
    recipient text not null,
    template text not null,
    -- JSON with the template's values
    payload text not null,
    created_at bigint not null,
    sent_at bigint
);
create index notification_outbox_unsent on notification_outbox (sent_at, created_at);
