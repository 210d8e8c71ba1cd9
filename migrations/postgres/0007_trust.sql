-- Trust: proven identities, documents that record their uploader's side, tokens that end with
-- the token that made them.

-- A codice fiscale counts for reading dossiers filed under it only once it is verified: at the
-- desk against an identity document, or through a verified identity provider.
alter table app_user add column identity_verified_at bigint;
-- who verified it (a user id; null for the operator at the command line)
alter table app_user add column identity_verified_by text;
-- how: 'identity_document', 'operator', 'before_identity_proofing', later 'spid' / 'cie'
alter table app_user add column identity_method text;
-- Accounts made before proofing existed were made by operators, except those activated online.
update app_user set identity_verified_at = created_at, identity_method = 'before_identity_proofing'
 where not exists (select 1 from registration r where r.tenant = app_user.tenant
                   and r.codice_fiscale = app_user.codice_fiscale and r.used_at is not null);
-- A codice fiscale is unique among verified accounts only: typing one proves nothing.
drop index app_user_cf;
create unique index app_user_verified_cf on app_user (tenant, codice_fiscale)
 where codice_fiscale is not null and identity_verified_at is not null;
create index app_user_cf on app_user (tenant, codice_fiscale);
-- An unverified account sees the dossiers it started itself.
create index dossier_created_by on dossier (created_by);

-- The registration's name, and the one account its code activates: an existing verified account
-- (set when registering) or the account created by its own activation.
alter table registration add column name text;
alter table registration add column user_id text;

-- A token made with a token ends with its parent.
alter table api_token add column parent_id text;
create index api_token_parent on api_token (parent_id);

-- Which side uploaded a document ('applicant' or 'office'); versions record their uploader's
-- role and channel ('online', 'desk', 'import').
alter table document add column side text;
update document set side = case (select role from app_user u where u.id = document.created_by)
    when 'citizen' then 'applicant' when 'professional' then 'applicant' else 'office' end;
alter table document_version add column created_role text;
alter table document_version add column channel text;
update document_version set created_role = (select role from app_user u where u.id = document_version.created_by);
update document_version set channel = case created_role
    when 'citizen' then 'online' when 'professional' then 'online' else 'desk' end;
create index document_version_creator on document_version (created_by);

-- Failed sign-ins and activations, counted per client address and hour instead of one row each,
-- so an attacker cannot flood the trail.
create table auth_failure (
    tenant text not null,
    client_address text not null,
    -- hour since the epoch
    hour bigint not null,
    -- 'activation', 'token'
    kind text not null,
    attempts bigint not null,
    first_at bigint not null,
    last_at bigint not null,
    primary key (tenant, client_address, hour, kind)
);

-- The dossiers whose documents' text each search returned, and those each listing showed:
-- derived from the audit events' details by a background task that follows the trail from
-- audit_disclosure_position, so a dossier's history lists every search that disclosed it.
create table audit_disclosure (
    seq bigint not null,
    dossier_id text not null,
    primary key (dossier_id, seq)
);
create table audit_disclosure_position (
    singleton integer primary key check (singleton = 1),
    -- audit events up to this seq are indexed
    seq bigint not null
);
insert into audit_disclosure_position (singleton, seq) values (1, 0);

-- The SHA-256 of each 1 MiB piece of a blob, as concatenated hex, recorded at upload: a Range
-- request reads and checks only the pieces it covers. Null for blobs stored before.
alter table blob add column chunk_hashes text;
