/*
 * A bind's catalog: the names of the tables and views that exist in its
 * database, as last read from it (SQLite's sqlite_schema, PostgreSQL's
 * pg_catalog), so routing can send a table to the bind that holds it. A
 * catalog is immutable once built and reference-counted, so worker threads
 * may read one while the loop thread installs its successor; a catset is
 * the current catalogs of every bind, in the order of the server's binds,
 * immutable and reference-counted as well. When and how catalogs are read
 * is catalog_refresh.c's job; this file is the data and its lookup (pure:
 * the router's unit tests and fuzzers link it).
 */
#ifndef SQLMUX_DAEMON_CATALOG_H
#define SQLMUX_DAEMON_CATALOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct catalog {
    atomic_int refs;
    /* Orders catalogs of one bind: SQLite's schema_version, or for
     * PostgreSQL the sequence number the loop gave the read when it was
     * sent. A catalog replaces the installed one only when newer. */
    int64_t version;
    size_t n;
    char **keys; /* sorted, distinct, ASCII-lowercased: "name" for a table
                    reachable unqualified, "schema.name" for every table */
    size_t cap;
};

struct catset {
    atomic_int refs;
    size_t n;
    struct catalog *cats[]; /* [n]: binds[i]'s catalog, NULL: not read yet */
};

/* A new, empty catalog (refs 1), or NULL on ENOMEM. Any thread. */
struct catalog *catalog_new(int64_t version);

/* Add one table or view: schema NULL or "" adds only the bare name; with
 * a schema, "schema.name" and, when bare is true, "name" as well. Names
 * are lowercased. 0, or -1 on ENOMEM. Before catalog_seal() only. */
__attribute__((warn_unused_result)) int catalog_add(struct catalog *c, const char *schema, const char *name,
                                                    bool bare);

/* Sort and remove duplicates: the catalog is ready for lookups. */
void catalog_seal(struct catalog *c);

struct catalog *catalog_hold(struct catalog *c);
void catalog_drop(struct catalog *c); /* NULL is fine */

/* Whether the catalog holds schema.name ("" or NULL schema: the bare
 * name). schema and name are lowercased already. c may be NULL. */
bool catalog_has(const struct catalog *c, const char *schema, const char *name);

/* Whether two sealed catalogs hold the same names (NULL holds none). */
bool catalog_same(const struct catalog *a, const struct catalog *b);

/* A catset of n binds, all catalogs NULL (refs 1), or NULL on ENOMEM. Its
 * entries are filled by the caller (each a reference it gives the set). */
struct catset *catset_new(size_t n);
struct catset *catset_hold(struct catset *cs);
void catset_drop(struct catset *cs); /* NULL is fine */

#endif
