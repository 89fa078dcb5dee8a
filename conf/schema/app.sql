-- Schema of the "default" bind (conf/sqlmux.ini), run at start-up.
CREATE TABLE IF NOT EXISTS test1 (id INTEGER PRIMARY KEY, color VARCHAR(64) DEFAULT 'red');
