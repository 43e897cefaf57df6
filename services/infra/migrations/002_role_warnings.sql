-- What the database account of a project may do beyond reading its schema, found at registration (shown by
-- `querylift status` and `querylift project list`); empty for a proper read-only account.
ALTER TABLE projects ADD COLUMN IF NOT EXISTS role_warnings text[] NOT NULL DEFAULT '{}';
