-- kiln's schema on SQLite. Times are microseconds since the Unix epoch (UTC) in INTEGER columns,
-- the same representation as on PostgreSQL, so both backends share every query that reads them.

CREATE TABLE dags (
    id TEXT PRIMARY KEY,
    current_version_id INTEGER,
    paused INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    source_hash TEXT NOT NULL,
    file_path TEXT NOT NULL,
    -- The logical date of the newest scheduled run, so a restart neither repeats nor skips ticks.
    last_scheduled_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE dag_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dag_id TEXT NOT NULL REFERENCES dags (id),
    version INTEGER NOT NULL CHECK (version >= 1),
    source_hash TEXT NOT NULL,
    source TEXT NOT NULL,
    definition TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (dag_id, version)
);

-- A file whose newest content does not load: the last good version stays active, and the
-- console shows why the new one was refused.
CREATE TABLE dag_file_errors (
    file_path TEXT PRIMARY KEY,
    dag_id TEXT,
    errors TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dag_id TEXT NOT NULL REFERENCES dags (id),
    dag_version_id INTEGER NOT NULL REFERENCES dag_versions (id),
    logical_date INTEGER NOT NULL,
    data_interval_start INTEGER,
    data_interval_end INTEGER,
    trigger_kind TEXT NOT NULL CHECK (trigger_kind IN ('schedule', 'manual', 'api', 'backfill')),
    params TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'success', 'failed', 'cancelled')),
    -- Tasks not yet in a final state; the run finishes when this reaches zero.
    unfinished_tasks INTEGER NOT NULL DEFAULT 0 CHECK (unfinished_tasks >= 0),
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    UNIQUE (dag_id, logical_date),
    CHECK ((state IN ('success', 'failed', 'cancelled')) = (ended_at IS NOT NULL))
);
CREATE INDEX runs_by_state ON runs (state, dag_id, logical_date);
CREATE INDEX runs_by_dag ON runs (dag_id, id);

CREATE TABLE task_instances (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    task_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('scheduled', 'queued', 'running', 'success', 'failed',
        'up_for_retry', 'upstream_failed', 'skipped', 'cancelled')),
    try_number INTEGER NOT NULL DEFAULT 0 CHECK (try_number >= 0),
    max_tries INTEGER NOT NULL CHECK (max_tries >= 1),
    priority INTEGER NOT NULL DEFAULT 0,
    queue TEXT NOT NULL,
    -- Upstream outcomes so far; trigger rules are decided from these counters, so a join task
    -- with 500 upstreams costs one row update per finished upstream, not a scan of all 500.
    upstream_total INTEGER NOT NULL DEFAULT 0,
    upstream_success INTEGER NOT NULL DEFAULT 0,
    upstream_failed INTEGER NOT NULL DEFAULT 0,
    upstream_skipped INTEGER NOT NULL DEFAULT 0,
    next_retry_at INTEGER,
    worker_id TEXT,
    lease_expires_at INTEGER,
    timeout_at INTEGER,
    -- The task's timeout, copied from its definition so a claim can set timeout_at in SQL.
    timeout_micros INTEGER,
    -- Incremented by every claim and by every transition a worker did not ask for; a worker's
    -- heartbeat or completion must carry the current value.
    fence INTEGER NOT NULL DEFAULT 0,
    queued_at INTEGER,
    started_at INTEGER,
    ended_at INTEGER,
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
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_instance_id INTEGER NOT NULL REFERENCES task_instances (id),
    try_number INTEGER NOT NULL CHECK (try_number >= 1),
    worker_id TEXT NOT NULL,
    fence INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'success', 'failed', 'cancelled', 'timed_out', 'lost')),
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    error TEXT,
    summary TEXT,
    UNIQUE (task_instance_id, try_number),
    CHECK ((state = 'running') = (ended_at IS NULL))
);

CREATE TABLE task_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_instance_id INTEGER NOT NULL REFERENCES task_instances (id),
    try_number INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    chunk TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- Re-sent chunks (a worker retrying after a lost answer) are stored once.
    UNIQUE (task_instance_id, try_number, seq)
);

CREATE TABLE leaders (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
