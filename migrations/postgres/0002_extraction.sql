-- Text extraction state per document version, written by the indexing pipeline.
-- 'pending' until the pipeline has handled the version, then 'done' or 'failed'.
alter table document_version add column extraction_status text not null default 'pending';
-- number of pages, for paged formats (PDF)
alter table document_version add column extraction_pages integer;
-- characters of text extracted (after the cap)
alter table document_version add column extraction_chars bigint;
-- why extraction failed, for people
alter table document_version add column extraction_error text;
