-- Core tables of fascicolo (SQLite dialect; postgres/0001_core.sql is the same schema).
-- Times are milliseconds since the Unix epoch, UTC. Ids are UUIDv7 text.
-- Every row that belongs to a municipality carries its tenant (IPA code of the ente, e.g. c_c722).

create table office (
    tenant text not null,
    code text not null,
    name text not null,
    primary key (tenant, code)
);

create table procedure_kind (
    tenant text not null,
    code text not null,
    name text not null,
    office_code text not null,
    -- legal deadline to conclude the procedure, in days
    deadline_days integer not null,
    primary key (tenant, code),
    foreign key (tenant, office_code) references office (tenant, code)
);

create table app_user (
    id text primary key,
    tenant text not null,
    role text not null check (role in ('citizen', 'professional', 'staff', 'auditor', 'admin')),
    name text not null,
    -- codice fiscale, 16 upper-case characters; required for citizens and professionals
    codice_fiscale text,
    created_at bigint not null,
    -- set when the account is disabled; its tokens stop working at once
    disabled_at bigint
);
create unique index app_user_cf on app_user (tenant, codice_fiscale) where codice_fiscale is not null;

create table user_office (
    user_id text not null references app_user (id),
    tenant text not null,
    office_code text not null,
    primary key (user_id, office_code),
    foreign key (tenant, office_code) references office (tenant, code)
);

create table api_token (
    id text primary key,
    user_id text not null references app_user (id),
    -- hex SHA-256 of the secret; the secret itself is shown once and never stored
    token_hash text not null unique,
    label text not null,
    created_at bigint not null,
    expires_at bigint,
    revoked_at bigint
);
create index api_token_user on api_token (user_id);

-- last number handed out per tenant and year: dossier numbers are YYYY/NNNNNN
create table dossier_sequence (
    tenant text not null,
    year integer not null,
    last_value bigint not null,
    primary key (tenant, year)
);

create table dossier (
    id text primary key,
    tenant text not null,
    year integer not null,
    seq bigint not null,
    -- human number, YYYY/NNNNNN
    number text not null,
    procedure_code text not null,
    -- the office handling it, copied from the procedure when opened
    office_code text not null,
    applicant_cf text not null,
    subject text not null,
    status text not null,
    -- online (filed by the applicant) or desk (filed by staff from paper)
    channel text not null check (channel in ('online', 'desk')),
    created_by text not null references app_user (id),
    created_at bigint not null,
    updated_at bigint not null,
    unique (tenant, year, seq),
    foreign key (tenant, procedure_code) references procedure_kind (tenant, code)
);
create index dossier_applicant on dossier (tenant, applicant_cf);
create index dossier_office on dossier (tenant, office_code);

-- a professional's access to a client's dossier
create table delegation (
    dossier_id text not null references dossier (id),
    professional_cf text not null,
    granted_by text not null references app_user (id),
    created_at bigint not null,
    -- the delegation lapses at this time, if set
    valid_until bigint,
    revoked_at bigint,
    primary key (dossier_id, professional_cf)
);
create index delegation_professional on delegation (professional_cf);

-- every blob the store holds for a row; written before the rows that reference it
create table blob (
    sha256 text primary key,
    size bigint not null,
    -- media type sniffed from the bytes when first stored
    media_type text not null,
    created_at bigint not null
);

create table document (
    id text primary key,
    dossier_id text not null references dossier (id),
    title text not null,
    kind text not null,
    visibility text not null check (visibility in ('public', 'internal')),
    -- number of the newest version; versions are numbered from 1
    current_version integer not null,
    created_by text not null references app_user (id),
    created_at bigint not null,
    updated_at bigint not null
);
create index document_dossier on document (dossier_id);

create table document_version (
    document_id text not null references document (id),
    version integer not null,
    sha256 text not null references blob (sha256),
    size bigint not null,
    media_type text not null,
    -- the client's file name, sanitised; shown, never used as a path
    filename text not null,
    created_by text not null references app_user (id),
    created_at bigint not null,
    primary key (document_id, version)
);
create index document_version_sha256 on document_version (sha256);

-- every change that affects search, in commit order; the indexer follows it
create table change_log (
    seq integer primary key autoincrement,
    tenant text not null,
    -- 'dossier' or 'document'
    entity text not null,
    entity_id text not null,
    op text not null,
    created_at bigint not null
);
