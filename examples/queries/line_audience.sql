-- LINE user IDs for an upload audience (target: audience). The reference names the column id;
-- a few sample UIDs are malformed on purpose and are reported as rejects, never sent.
SELECT line_uid AS id FROM segment_users
