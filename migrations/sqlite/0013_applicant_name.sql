-- The applicant's name, as the front office writes it when filing a dossier at the desk for
-- someone without an account (online, the account names its holder).
alter table dossier add column applicant_name text;
