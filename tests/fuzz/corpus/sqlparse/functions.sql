SELECT substring(name FROM 2 FOR 3), EXTRACT(year FROM d), count(*) FILTER (WHERE x > 0) OVER (PARTITION BY a ORDER BY b) FROM t, json_each(t.doc) j, LATERAL generate_series(1, 3) g;
