SELECT DISTINCT ifa AS id
FROM conversion_events
WHERE ifa IS NOT NULL AND event_type = 'conversion'
