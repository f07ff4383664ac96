-- Artifact versions and lineage. A version names a content-addressed blob (its SHA-256); the
-- blob itself lives in the artifact store, never in the database.

-- One row per artifact name: its kind, and the newest version number. Publishing a version
-- updates this row first, which serializes concurrent publishers of the same name.
CREATE TABLE artifacts (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('dataset', 'model', 'file')),
    latest_version BIGINT NOT NULL DEFAULT 0 CHECK (latest_version >= 0),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE artifact_versions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL REFERENCES artifacts (name),
    version BIGINT NOT NULL CHECK (version >= 1),
    sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
    size BIGINT NOT NULL CHECK (size >= 0),
    media_type TEXT NOT NULL,
    -- The attempt that first wrote these bytes under this name; NULL for versions put by hand.
    task_instance_id BIGINT REFERENCES task_instances (id),
    try_number BIGINT,
    -- Datasets: column names and types (JSON) and the number of rows, when the writer knew them.
    dataset_schema TEXT,
    row_count BIGINT CHECK (row_count >= 0),
    created_at BIGINT NOT NULL,
    UNIQUE (name, version),
    CHECK ((task_instance_id IS NULL) = (try_number IS NULL))
);
CREATE INDEX artifact_versions_by_blob ON artifact_versions (sha256);

-- Lineage: which attempt read which version (`input`) and which wrote it (`output`). Written in
-- the same transaction as the attempt's completion, so lineage is never half-recorded.
CREATE TABLE attempt_artifacts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_instance_id BIGINT NOT NULL REFERENCES task_instances (id),
    try_number BIGINT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('input', 'output')),
    -- The name the task knows the artifact by (its input or output name).
    slot TEXT NOT NULL,
    artifact_version_id BIGINT NOT NULL REFERENCES artifact_versions (id),
    -- An output that was an existing version (identical bytes, or a cache hit), not a new one.
    reused BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (task_instance_id, try_number, direction, slot)
);
CREATE INDEX attempt_artifacts_by_version ON attempt_artifacts (artifact_version_id, direction);

-- The input versions an attempt was given (JSON), fixed when it was claimed; the cache key of a
-- cacheable attempt; and, for a cache hit, the attempt whose outputs it reused.
ALTER TABLE task_attempts ADD COLUMN inputs TEXT;
ALTER TABLE task_attempts ADD COLUMN cache_key TEXT;
ALTER TABLE task_attempts ADD COLUMN cache_hit_of BIGINT REFERENCES task_attempts (id);
CREATE INDEX task_attempts_by_cache_key ON task_attempts (cache_key) WHERE cache_key IS NOT NULL AND state = 'success';
