-- Value grounding: the distinct short text values of each customer column, collected at registration and
-- refresh (bounded per column and per project), always read by project.
CREATE TABLE IF NOT EXISTS column_values (
    project_id   text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    table_name   text NOT NULL,
    column_name  text NOT NULL,
    value        text NOT NULL,
    complete     boolean NOT NULL,
    PRIMARY KEY (project_id, table_name, column_name, value)
);
ALTER TABLE projects ADD COLUMN IF NOT EXISTS values_collected_at timestamptz;
