-- What a reviewer sees of an answer beyond the answers row: the result preview the asker got (customer rows,
-- kept apart so they can be dropped or expired without touching the learning history), how the SQL was made
-- and the suggested next questions. Written by the feedback consumer from chat.answer.
CREATE TABLE IF NOT EXISTS answer_details (
    answer_id       uuid PRIMARY KEY REFERENCES answers(id) ON DELETE CASCADE,
    project_id      text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    columns         jsonb NOT NULL DEFAULT '[]',
    rows_preview    jsonb NOT NULL DEFAULT '[]',
    truncated       boolean NOT NULL DEFAULT false,
    sql_source      text NOT NULL DEFAULT 'model',
    repaired        boolean NOT NULL DEFAULT false,
    attempts        integer NOT NULL DEFAULT 1,
    suggestions     jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS answers_project_created ON answers (project_id, created_at DESC);
