-- Delivery of the notification outbox: each message is pending until a sender claims it with a
-- lease, then sent, retried later, or failed with the reason.
alter table notification_outbox add column status text not null default 'pending';
update notification_outbox set status = 'sent' where sent_at is not null;
-- attempts made so far
alter table notification_outbox add column attempts integer not null default 0;
-- not before this time (ms); null: now
alter table notification_outbox add column next_attempt_at bigint;
-- claimed by `leased_by` until this time (ms)
alter table notification_outbox add column lease_until bigint;
alter table notification_outbox add column leased_by text;
alter table notification_outbox add column last_error text;
create index notification_outbox_due on notification_outbox (status, channel, created_at);
