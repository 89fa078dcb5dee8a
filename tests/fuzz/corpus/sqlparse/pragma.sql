PRAGMA main.table_info("t");
