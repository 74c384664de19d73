-- The reference's example query over the sample table conversion_events. Raw phone and email
-- are normalized and SHA-256 hashed before they leave the process. LINE refuses events older
-- than its window, so the sample timestamps are moved to the hour before the session time
-- (same spacing); with real data select the column as it is.
SELECT
  referrer,
  ip_address,
  title,
  user_agent,
  url,
  deduplication_key,
  event_type,
  event_name,
  source_type,
  event_timestamp
    + (${session_unixtime} - 3600 - max(event_timestamp) OVER ()) AS event_timestamp,
  browser_id,
  click_id,
  phone,
  ifa,
  external_id,
  line_uid,
  email
FROM
  conversion_events
