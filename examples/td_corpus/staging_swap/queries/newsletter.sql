SELECT line_uid, customer_id
FROM line_members
WHERE tags LIKE '%newsletter%'
