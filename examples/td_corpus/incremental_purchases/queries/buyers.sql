SELECT DISTINCT line_uid
FROM conversion_events
WHERE event_name = 'purchase'
  AND TD_TIME_RANGE(event_timestamp, '${last_session_date}', '${session_date}', 'Asia/Tokyo')
