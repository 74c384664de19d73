-- Fails the run (and so the _error mail) when fewer than ${min_vips} VIPs are found.
SELECT CASE WHEN count(*) >= ${min_vips} THEN count(*)
            ELSE error('only ' || count(*) || ' VIPs (minimum ${min_vips})') END AS vips
FROM line_members
WHERE tags = 'vip'
