-- Members whose birthday month is the session's month.
SELECT line_uid
FROM line_members
WHERE substr(birthday, 6, 2) = '${month}'
