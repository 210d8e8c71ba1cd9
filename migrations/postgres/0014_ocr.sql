-- OCR of images and scanned PDF pages: one job per stored file (content-addressed, so a file
-- uploaded twice is read once). `pages` is a JSON array of the 1-based pages to read;
-- `status` is pending, running, done or failed. A running job whose `claimed_at` is older
-- than its lease belongs to a worker that died and is taken again.
create table ocr_job (
    sha256 text primary key,
    media_type text not null,
    pages text not null,
    status text not null,
    attempts integer not null default 0,
    claimed_at bigint,
    created_at bigint not null,
    finished_at bigint,
    pages_read integer,
    mean_confidence double precision,
    reason text
);
create index ocr_job_waiting on ocr_job (status, created_at);
