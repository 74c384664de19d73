-- One push per row (target: push_message). Every {{placeholder}} of template_message must be a
-- column here, e.g. {"type": "text", "text": "Hi {{display_name}}, your code is {{coupon_code}}"}.
SELECT
  user_id AS id,
  display_name,
  coupon_code,
  CAST(points AS VARCHAR) AS points
FROM
  line_recipients
