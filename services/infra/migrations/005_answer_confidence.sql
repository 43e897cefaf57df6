-- How sure each answer was (chat.answer.confidence), so answers that most need a look can be listed.
ALTER TABLE answers ADD COLUMN IF NOT EXISTS confidence real;
ALTER TABLE answers ADD COLUMN IF NOT EXISTS confidence_basis text;
CREATE INDEX IF NOT EXISTS answers_review ON answers (project_id, confidence) WHERE ok;
