-- Schema of the "second_db" bind (conf/sqlmux.ini), run at start-up.
CREATE TABLE IF NOT EXISTS test2 (id INTEGER PRIMARY KEY, color VARCHAR(64) DEFAULT 'red');
