-- Every verification of the audit chain and what it found, newest last: the auditors' page
-- shows the last one.
create table audit_verification (
    id text primary key,
    at bigint not null,
    -- the auditor who asked for it; null for the command line
    user_id text,
    -- rows checked
    checked bigint not null,
    -- the first row that breaks the chain, and why; null when the chain holds
    broken_seq bigint,
    reason text,
    -- the head it ended at
    head_seq bigint not null,
    head_hash text not null
);
create index audit_verification_at on audit_verification (at);
