-- kiln's schema on PostgreSQL. Times are microseconds since the Unix epoch (UTC) in BIGINT columns,
-- the same representation as on SQLite, so both backends share every query that reads them.

CREATE TABLE dags (
    id TEXT PRIMARY KEY,
    current_version_id BIGINT,
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    source_hash TEXT NOT NULL,
    file_path TEXT NOT NULL,
    -- The logical date of the newest scheduled run, so a restart neither repeats nor skips ticks.
    last_scheduled_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE dag_versions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dag_id TEXT NOT NULL REFERENCES dags (id),
    version BIGINT NOT NULL CHECK (version >= 1),
    source_hash TEXT NOT NULL,
    source TEXT NOT NULL,
    definition TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (dag_id, version)
);

-- A file whose newest content does not load: the last good version stays active, and the
-- console shows why the new one was refused.
CREATE TABLE dag_file_errors (
    file_path TEXT PRIMARY KEY,
    dag_id TEXT,
    errors TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE runs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dag_id TEXT NOT NULL REFERENCES dags (id),
    dag_version_id BIGINT NOT NULL REFERENCES dag_versions (id),
    logical_date BIGINT NOT NULL,
    data_interval_start BIGINT,
    data_interval_end BIGINT,
    trigger_kind TEXT NOT NULL CHECK (trigger_kind IN ('schedule', 'manual', 'api', 'backfill')),
    params TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'success', 'failed', 'cancelled')),
    -- Tasks not yet in a final state; the run finishes when this reaches zero.
    unfinished_tasks BIGINT NOT NULL DEFAULT 0 CHECK (unfinished_tasks >= 0),
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    ended_at BIGINT,
    UNIQUE (dag_id, logical_date),
    CHECK ((state IN ('success', 'failed', 'cancelled')) = (ended_at IS NOT NULL))
);
CREATE INDEX runs_by_state ON runs (state, dag_id, logical_date);
CREATE INDEX runs_by_dag ON runs (dag_id, id);

CREATE TABLE task_instances (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES runs (id),
    task_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('scheduled', 'queued', 'running', 'success', 'failed',
        'up_for_retry', 'upstream_failed', 'skipped', 'cancelled')),
    try_number BIGINT NOT NULL DEFAULT 0 CHECK (try_number >= 0),
    max_tries BIGINT NOT NULL CHECK (max_tries >= 1),
    priority BIGINT NOT NULL DEFAULT 0,
    queue TEXT NOT NULL,
    -- Upstream outcomes so far; trigger rules are decided from these counters, so a join task
    -- with 500 upstreams costs one row update per finished upstream, not a scan of all 500.
    upstream_total BIGINT NOT NULL DEFAULT 0,
    upstream_success BIGINT NOT NULL DEFAULT 0,
    upstream_failed BIGINT NOT NULL DEFAULT 0,
    upstream_skipped BIGINT NOT NULL DEFAULT 0,
    next_retry_at BIGINT,
    worker_id TEXT,
    lease_expires_at BIGINT,
    timeout_at BIGINT,
    -- The task's timeout, copied from its definition so a claim can set timeout_at in SQL.
    timeout_micros BIGINT,
    -- Incremented by every claim and by every transition a worker did not ask for; a worker's
    -- heartbeat or completion must carry the current value.
    fence BIGINT NOT NULL DEFAULT 0,
    queued_at BIGINT,
    started_at BIGINT,
    ended_at BIGINT,
    error TEXT,
    summary TEXT,
    UNIQUE (run_id, task_id),
    CHECK ((state = 'running') = (worker_id IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK ((state = 'up_for_retry') = (next_retry_at IS NOT NULL)),
    CHECK (try_number <= max_tries),
    CHECK (upstream_success + upstream_failed + upstream_skipped <= upstream_total)
);
CREATE INDEX task_instances_claimable ON task_instances (queue, priority DESC, id) WHERE state = 'queued';
CREATE INDEX task_instances_retry_due ON task_instances (next_retry_at) WHERE state = 'up_for_retry';
CREATE INDEX task_instances_running ON task_instances (lease_expires_at) WHERE state = 'running';

CREATE TABLE task_attempts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_instance_id BIGINT NOT NULL REFERENCES task_instances (id),
    try_number BIGINT NOT NULL CHECK (try_number >= 1),
    worker_id TEXT NOT NULL,
    fence BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'success', 'failed', 'cancelled', 'timed_out', 'lost')),
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    error TEXT,
    summary TEXT,
    UNIQUE (task_instance_id, try_number),
    CHECK ((state = 'running') = (ended_at IS NULL))
);

CREATE TABLE task_logs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_instance_id BIGINT NOT NULL REFERENCES task_instances (id),
    try_number BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    chunk TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- Re-sent chunks (a worker retrying after a lost answer) are stored once.
    UNIQUE (task_instance_id, try_number, seq)
);

CREATE TABLE leaders (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
