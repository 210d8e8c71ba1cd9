-- How far each server node has moved its local audit journal into audit_event; updated in
-- the same transaction as the rows it moves, so a restart replays exactly the rest.
create table audit_journal (
    -- the node's id, kept in its data dir
    node text primary key,
    -- byte offset in the node's journal file
    moved bigint not null
);
