-- The model registry: a model is an artifact of kind `model`, its versions are the artifact's
-- versions, and aliases say which version is served (`production`) or tried (`staging`).

-- What a version's writer said about it (a model's metrics, say), as JSON.
ALTER TABLE artifact_versions ADD COLUMN metadata TEXT;

CREATE TABLE model_aliases (
    name TEXT NOT NULL REFERENCES artifacts (name),
    alias TEXT NOT NULL CHECK (alias IN ('production', 'staging')),
    version BIGINT NOT NULL CHECK (version >= 1),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (name, alias)
);

-- Every move of an alias, oldest first: the registry's history, and what a rollback reads.
CREATE TABLE model_alias_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL REFERENCES artifacts (name),
    alias TEXT NOT NULL CHECK (alias IN ('production', 'staging')),
    version BIGINT NOT NULL CHECK (version >= 1),
    -- The version the alias pointed at before; NULL when it was new.
    previous BIGINT,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX model_alias_events_by_name ON model_alias_events (name, alias, id);
