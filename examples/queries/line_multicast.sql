-- Recipients of one multicast message (target: multicast_message): only the recipient ID column.
SELECT DISTINCT user_id AS id FROM line_recipients
