-- A professional's dossiers are read at every search they make: an index that holds the
-- columns of the rule (revoked, lapsed) answers it without reading the table's rows.
drop index delegation_professional;
create index delegation_professional on delegation (professional_cf, revoked_at, valid_until, dossier_id);
