-- Attempts lost to the infrastructure (the worker died, its lease expired, or it handed the
-- attempt back while shutting down) are run again without using the task's own tries, up to a
-- budget of their own, so a dead worker costs nothing while a task that kills every worker it
-- runs on still ends. Each loss raises `max_tries` by one as it is counted, in the statement
-- that moves the task on, so `try_number <= max_tries` keeps holding and the task's own tries
-- are `max_tries - lost_attempts`. Both counters start again when the task is cleared.
ALTER TABLE task_instances ADD COLUMN lost_attempts INTEGER NOT NULL DEFAULT 0 CHECK (lost_attempts >= 0);
-- The task's budget, copied from its definition so the statement that counts a loss can decide
-- between running the task again and failing it.
ALTER TABLE task_instances ADD COLUMN max_lost_attempts INTEGER NOT NULL DEFAULT 3 CHECK (max_lost_attempts >= 0);
