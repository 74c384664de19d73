-- LinkedIn account list (audience_type: companies): at least one of the three per row.
SELECT
  company_name,
  company_website_domain,
  company_email_domain
FROM
  linkedin_companies
