SELECT DISTINCT line_uid
FROM conversion_events
WHERE event_name = 'purchase'
  AND TD_TIME_RANGE(event_timestamp,
                    '${moment(session_time).subtract(7, "days").format("YYYY-MM-DD")}',
                    '${session_date}', 'Asia/Tokyo')
