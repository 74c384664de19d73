-- The reference's example query for LINE Conversion API events, over the sample table
-- conversion_events. Raw phone and email are fine: they are normalized and SHA-256 hashed
-- before they leave the process.
-- LINE accepts an event_timestamp from 90 days before to 24 hours after the request arrives;
-- the sample events lie within the 28 days before the day the sample table was created.
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
  event_timestamp,
  browser_id,
  click_id,
  phone,
  ifa,
  external_id,
  line_uid,
  email
FROM
  conversion_events
