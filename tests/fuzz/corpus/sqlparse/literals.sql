SELECT 'it''s FROM x', E'it\'s FROM y', $$ FROM z; $$, $tag$ $$ $tag$, X'ABCD', 1.5e10, .5, 0x1F, "a""b", [c d], `e``f` /* FROM c */ -- FROM d
FROM t;
