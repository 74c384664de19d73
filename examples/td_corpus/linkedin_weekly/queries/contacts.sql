SELECT email, google_aid, apple_idfa, first_name, last_name, title, company, country
FROM linkedin_contacts
WHERE country IN ('jp', 'tw')
