-- The example query of "LINE via Crescendo Lab" (maac-crescendo-export), over the sample
-- table line_members (display_name is accepted for line_display_name).
SELECT
  line_uid,
  customer_id,
  display_name,
  gender,
  email,
  tags,
  birthday
FROM
  line_members
