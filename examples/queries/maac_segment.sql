-- LINE UIDs for a MAAC custom segment.
SELECT line_uid FROM segment_users
