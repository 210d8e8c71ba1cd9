-- How a version's text was obtained (text_layer, text, html, office, email) and what its
-- format says of itself (an e-mail's headers and attachments, a PEC's delivery data), as JSON.
alter table document_version add column extraction_method text;
alter table document_version add column extraction_meta text;
