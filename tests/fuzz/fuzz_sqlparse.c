/*
 * libFuzzer target for daemon/sqlparse.c: each input is one SQL request,
 * analyzed with sqlparse_analyze() straight from the fuzzer's buffer (not
 * NUL-terminated, so reads past the end show up under ASan). Beyond not
 * crashing, the result must be self-consistent: a return code from the
 * list, an error message exactly on failure, and on success table names
 * that point into route_info.names, are lowercase ASCII-wise and appear
 * only once.
 *
 * Build: clang -std=c11 -D_GNU_SOURCE -I. -g -O1 \
 *          -fsanitize=fuzzer,address,undefined \
 *          tests/fuzz/fuzz_sqlparse.c daemon/sqlparse.c daemon/sqlparse_heads.c \
 *          daemon/sqlparse_names.c daemon/sqllex.c -o build/fuzz_sqlparse
 * Run:   build/fuzz_sqlparse tests/fuzz/corpus/sqlparse
 * With -DSQLMUX_FUZZ_MAIN (and no -fsanitize=fuzzer) it builds a plain
 * program that runs the files named on its command line once each.
 */
#include "daemon/sqlparse.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts unless s lies inside the names block of ri and has no ASCII
 * uppercase letters. */
static void fuzz_check_name(const struct route_info *ri, const char *s, size_t block)
{
    if (s < ri->names || s >= ri->names + block)
        abort();
    for (; *s != '\0'; s++)
        if (*s >= 'A' && *s <= 'Z')
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy of exactly size bytes: no terminator to lean on. */
    char *sql = malloc(size ? size : 1);
    if (sql == NULL)
        return 0;
    if (size > 0)
        memcpy(sql, data, size);

    struct route_info ri;
    int rc = sqlparse_analyze(sql, size, &ri);
    switch (rc) {
    case SQLPARSE_OK:
        if (ri.error[0] != '\0' || (ri.ntables == 0) != (ri.tables == NULL))
            abort();
        if (sqlparse_kind_name(ri.kind) == NULL)
            abort();
        if (ri.ntables > 0) {
            /* Names use at most two bytes per input byte plus terminators. */
            size_t block = 2 * size + 2 * ri.ntables + 2;
            for (size_t i = 0; i < ri.ntables; i++) {
                fuzz_check_name(&ri, ri.tables[i].schema, block);
                fuzz_check_name(&ri, ri.tables[i].name, block);
                for (size_t j = 0; j < i; j++)
                    if (strcmp(ri.tables[i].schema, ri.tables[j].schema) == 0 &&
                        strcmp(ri.tables[i].name, ri.tables[j].name) == 0)
                        abort();
            }
        }
        /* Every reference lies inside the input, in text order, names a
         * table, and every table is referenced; the target is a table. */
        if ((ri.nrefs == 0) != (ri.refs == NULL) || (ri.ntables > 0 && ri.nrefs < ri.ntables) ||
            (ri.target != SIZE_MAX && ri.target >= ri.ntables))
            abort();
        for (size_t i = 0; i < ri.nrefs; i++) {
            const struct route_ref *r = &ri.refs[i];
            if (r->len == 0 || r->pos + r->len > size || r->table >= ri.ntables || r->role > REF_REFERENCES ||
                (i > 0 && r->pos < ri.refs[i - 1].pos + ri.refs[i - 1].len))
                abort();
        }
        break;
    case SQLPARSE_ESYNTAX:
    case SQLPARSE_EMULTI:
    case SQLPARSE_ENOMEM:
        if (ri.error[0] == '\0' || memchr(ri.error, '\0', sizeof ri.error) == NULL || ri.ntables != 0 ||
            ri.tables != NULL || ri.names != NULL || ri.refs != NULL || ri.nrefs != 0)
            abort();
        break;
    default: abort();
    }
    sqlparse_info_free(&ri);
    free(sql);
    return 0;
}

#include "tests/fuzz/fuzz_main.h"
