SELECT deduplication_key, event_type, event_name, source_type,
       event_timestamp + (${session_unixtime} - 3600 - max(event_timestamp) OVER ()) AS event_timestamp,
       url, referrer, title, user_agent, ip_address, browser_id, ifa, click_id, external_id,
       line_uid, phone, email
FROM conversion_events
ORDER BY deduplication_key
LIMIT 500
