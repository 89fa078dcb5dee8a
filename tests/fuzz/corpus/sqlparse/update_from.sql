UPDATE OR ROLLBACK t AS a SET x = u.y FROM u, (SELECT * FROM v) AS w WHERE a.id = u.id AND w.k = @k;
