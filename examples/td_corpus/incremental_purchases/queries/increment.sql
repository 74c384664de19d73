-- The purchases between the last session and this one (digdag's last_session_time).
SELECT event_timestamp AS time, line_uid, deduplication_key
FROM conversion_events
WHERE event_name = 'purchase'
  AND TD_TIME_RANGE(event_timestamp, '${last_session_time}', '${session_time}')
