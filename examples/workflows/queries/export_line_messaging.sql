-- An IFA audience (is_ifa_audience: true): one advertising ID per row in column id, as in the
-- reference's "SELECT my_col as id FROM www_access". Sample IFAs come from conversion_events.
SELECT ifa AS id
FROM conversion_events
WHERE ifa IS NOT NULL
