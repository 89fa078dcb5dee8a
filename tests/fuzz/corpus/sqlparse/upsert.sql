INSERT INTO t (id, v) VALUES (?1, :v) ON CONFLICT (id) DO UPDATE SET v = excluded.v WHERE t.v < excluded.v RETURNING id;
