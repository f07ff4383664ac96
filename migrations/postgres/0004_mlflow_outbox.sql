-- The MLflow mirror. kiln's own tables stay the source of truth; MLflow is told about runs,
-- training and evaluation attempts and model versions through an outbox, so that MLflow being
-- down never fails or slows a task, and nothing it should hear about is lost or sent twice.

-- Every call kiln owes MLflow, written in the same transaction as the change it mirrors (a run
-- starting or ending, an attempt's completion, an alias move): a committed change always has
-- its event, a rolled-back one never does. The sender deletes an event once MLflow has it.
-- No foreign keys: the outbox is a queue beside the data, and must never block changing it.
CREATE TABLE mlflow_outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('run_start', 'task_attempt', 'run_end', 'model_version', 'alias_set')),
    -- The events of one stream are sent one after another, in id order: a kiln run's
    -- (`run:ID`: its start, its attempts, its end) or a model's (`model:NAME`: versions, aliases).
    stream TEXT NOT NULL,
    -- What the call needs, as JSON; its shape depends on `kind`.
    payload TEXT NOT NULL,
    run_id BIGINT,
    task_instance_id BIGINT,
    try_number BIGINT,
    model_name TEXT,
    model_version BIGINT,
    -- Failed sends so far; the event waits until `next_attempt_at` (backoff).
    attempts BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    -- Given up on after too many failures: kept, with its error, until an operator retries it.
    parked BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    CHECK (NOT parked OR last_error IS NOT NULL),
    CHECK ((task_instance_id IS NULL) = (try_number IS NULL))
);
CREATE INDEX mlflow_outbox_pending ON mlflow_outbox (stream, id) WHERE NOT parked;

-- What MLflow called the things kiln created there (`kind`, kiln's key): an experiment by its
-- name, a kiln run, an attempt (`TASK_INSTANCE:TRY`) and a model version (`NAME@VERSION`;
-- MLflow numbers versions itself); registered models need no row, MLflow keys them by name.
-- The sender looks here first and records an id as soon as it has one, so a retry never
-- creates a second MLflow run or model version.
CREATE TABLE mlflow_ids (
    kind TEXT NOT NULL CHECK (kind IN ('experiment', 'run', 'attempt', 'model_version')),
    kiln_key TEXT NOT NULL,
    mlflow_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (kind, kiln_key)
);
