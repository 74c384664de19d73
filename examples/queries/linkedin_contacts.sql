-- LinkedIn contact list (audience_type: users). Raw emails are trimmed, lowercased and SHA-256
-- hashed before they leave the machine; 64/128-hex SHA-256/SHA-512 values pass as they are.
-- A row needs email, google_aid or apple_idfa, or both first_name and last_name.
SELECT
  email,
  google_aid,
  apple_idfa,
  first_name,
  last_name,
  title,
  company,
  country
FROM
  linkedin_contacts
