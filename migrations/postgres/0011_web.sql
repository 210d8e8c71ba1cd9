-- The web pages: browser sessions, sign-in codes for citizens and professionals, passwords and
-- TOTP second factors for staff, auditors and admins, their one-time activation links, and
-- the back-off of repeated sign-in failures.

-- a signed-in browser; the cookie holds a secret whose SHA-256 is the id
create table web_session (
    id_hash text primary key,
    tenant text not null,
    user_id text not null references app_user (id),
    -- the token every form of the session carries (synchronizer token)
    csrf text not null,
    -- 'code' (citizens, professionals) or 'password_totp' (staff, auditors, admins)
    method text not null,
    created_at bigint not null,
    last_seen_at bigint not null,
    -- absolute end, whatever the activity
    expires_at bigint not null,
    ended_at bigint,
    client_address text
);
create index web_session_user on web_session (user_id, ended_at);

-- a one-time code sent through the outbox to sign in a citizen or professional
create table sign_in_code (
    id text primary key,
    tenant text not null,
    user_id text not null references app_user (id),
    code_hash text not null,
    created_at bigint not null,
    expires_at bigint not null,
    attempts integer not null default 0,
    used_at bigint,
    client_address text
);
create index sign_in_code_user on sign_in_code (user_id, created_at);

-- the password (Argon2id, PHC string) and TOTP secret of a staff member, auditor or admin
create table user_credential (
    user_id text primary key references app_user (id),
    password_hash text not null,
    -- base32 TOTP secret (RFC 6238, SHA-1, 6 digits, 30 s)
    totp_secret text not null,
    -- the last time step a code was accepted for: a code is used once
    totp_last_step bigint not null default 0,
    set_at bigint not null
);

-- a one-time link where a new account's owner sets the password and enrols TOTP
create table activation_link (
    id text primary key,
    user_id text not null references app_user (id),
    token_hash text not null unique,
    created_at bigint not null,
    expires_at bigint not null,
    used_at bigint
);
create index activation_link_user on activation_link (user_id, created_at);

-- failed sign-ins per key (an account, an address, an account from an address)
create table sign_in_throttle (
    throttle_key text primary key,
    failures integer not null,
    last_failure_at bigint not null
);
