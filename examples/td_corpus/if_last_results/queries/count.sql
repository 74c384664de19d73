SELECT count(DISTINCT line_uid) AS buyers
FROM conversion_events
WHERE event_name = 'purchase'
  AND TD_TIME_RANGE(event_timestamp, '${yesterday}', '${session_date}', 'Asia/Tokyo')
