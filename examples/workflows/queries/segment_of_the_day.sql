-- LINE UIDs for the day's segment; ${session_date} is the scheduled day (the tick), in the
-- workflow's timezone.
SELECT line_uid, '${session_date}' AS session_date
FROM segment_users
