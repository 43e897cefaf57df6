-- querylift system of record. Applied once, in order, by services.common.migrate.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE projects (
    id                  text PRIMARY KEY,
    name                text NOT NULL,
    database_url        text NOT NULL,
    dialect             text NOT NULL CHECK (dialect IN ('sqlite', 'postgres', 'mysql')),
    domain              text,
    description         text,
    current_schema_version_id bigint,
    training_threshold  integer,
    canary_share        real NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE schema_versions (
    id          bigserial PRIMARY KEY,
    project_id  text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    hash        text NOT NULL,
    schema      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, hash)
);

CREATE TABLE conversations (
    id          text NOT NULL,
    project_id  text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, id)
);

-- One row per accepted chat.question.
CREATE TABLE messages (
    id              uuid PRIMARY KEY,
    project_id      text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    conversation_id text NOT NULL,
    user_id         text NOT NULL,
    question        text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_conversation ON messages (project_id, conversation_id, created_at);

-- One row per chat.answer or chat.error outcome of a question.
CREATE TABLE answers (
    id                  uuid PRIMARY KEY,
    question_event_id   uuid NOT NULL UNIQUE,
    project_id          text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    conversation_id     text,
    user_id             text,
    question            text NOT NULL,
    sql                 text,
    answer_text         text,
    ok                  boolean NOT NULL,
    error_code          text,
    schema_valid        boolean,
    row_count           integer,
    model               text,
    adapter_version     integer,
    arm                 text NOT NULL DEFAULT 'control',
    examples_used       jsonb NOT NULL DEFAULT '[]',
    chart               jsonb,
    timings_ms          jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX answers_conversation ON answers (project_id, conversation_id, created_at);

CREATE TABLE feedback (
    id              uuid PRIMARY KEY,
    answer_id       uuid NOT NULL,
    project_id      text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id         text,
    thumbs          text,
    rating          smallint,
    corrected_sql   text,
    corrected_sql_ok boolean,
    comment         text,
    chart_relevant  boolean,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feedback_answer ON feedback (answer_id);

-- Question/SQL pairs a project learns from (retrieval index and LoRA training data).
CREATE TABLE examples (
    id                  uuid PRIMARY KEY,
    project_id          text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    question            text NOT NULL,
    sql                 text NOT NULL,
    source              text NOT NULL,          -- answer, correction, history, import
    answer_id           uuid,
    quality             real NOT NULL DEFAULT 0,
    verified            boolean NOT NULL DEFAULT false,
    rated_down          boolean NOT NULL DEFAULT false,
    stale               boolean NOT NULL DEFAULT false,
    schema_version_id   bigint,
    tables              text[] NOT NULL DEFAULT '{}',
    columns             text[] NOT NULL DEFAULT '{}',
    masked_question     text,
    sql_skeleton        text,
    embedding           vector(384),
    embedding_model     text,
    trained_in_version  integer,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX examples_project ON examples (project_id) WHERE verified AND NOT stale AND NOT rated_down;
CREATE UNIQUE INDEX examples_answer ON examples (answer_id) WHERE answer_id IS NOT NULL;
CREATE INDEX examples_embedding ON examples USING hnsw (embedding vector_cosine_ops);

CREATE TABLE training_jobs (
    id              uuid PRIMARY KEY,
    project_id      text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    status          text NOT NULL,              -- requested, submitted, running, succeeded, failed, cancelled
    ray_job_id      text,
    examples_count  integer NOT NULL DEFAULT 0,
    error           text,
    metrics         jsonb NOT NULL DEFAULT '{}',
    requested_at    timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);
-- At most one unfinished job per project: the trigger relies on this to emit exactly one request.
CREATE UNIQUE INDEX training_jobs_one_open ON training_jobs (project_id)
    WHERE status IN ('requested', 'submitted', 'running');

CREATE TABLE model_versions (
    id              bigserial PRIMARY KEY,
    project_id      text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    version         integer NOT NULL,
    base_model      text NOT NULL,
    adapter_path    text,
    checksum        text,
    metrics         jsonb NOT NULL DEFAULT '{}',
    status          text NOT NULL CHECK (status IN ('candidate', 'canary', 'active', 'retired')),
    training_job_id uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, version)
);
CREATE UNIQUE INDEX model_versions_one_active ON model_versions (project_id) WHERE status = 'active';

-- Idempotency: an event id a consumer has handled, with the events it emitted so a redelivery can
-- re-publish them instead of running the handler again.
CREATE TABLE processed_events (
    consumer        text NOT NULL,
    event_id        uuid NOT NULL,
    outputs         jsonb NOT NULL DEFAULT '[]',
    published       boolean NOT NULL DEFAULT false,
    processed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Events set aside, also kept here because the embedded broker keeps topics in memory only.
CREATE TABLE dead_letters (
    id              uuid PRIMARY KEY,
    consumer        text NOT NULL,
    source_topic    text NOT NULL,
    partition       integer NOT NULL,
    "offset"        bigint NOT NULL,
    reason          text NOT NULL,
    error           text NOT NULL,
    payload_text    text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (consumer, source_topic, partition, "offset")
);
