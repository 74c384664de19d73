SELECT line_uid
FROM line_members
WHERE tags IN ('newsletter', 'coupon_2026')
