-- Schema of the "memory_db" bind (conf/sqlmux.ini), run at start-up: the
-- bind lives in memory, so this runs on every start and the table starts
-- empty each time.
CREATE TABLE IF NOT EXISTS test3 (id INTEGER PRIMARY KEY, color VARCHAR(64) DEFAULT 'blue');
