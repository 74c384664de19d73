-- The reference's example query for MAAC members (display_name is accepted for line_display_name).
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
