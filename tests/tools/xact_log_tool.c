/*
 * Test tool: reads and writes the coordinator log of transactions across
 * binds (daemon/xact_log.h) with the daemon's own code, so integration
 * tests can make the state a crash leaves (a decision record with
 * PostgreSQL parts) and check what start-up kept.
 *
 *   xact_log_tool append LOG TXID PART...   PART: anchor:BIND, pg:BIND or BIND
 *   xact_log_tool list LOG                  one line a decision: TXID PART...
 *
 * Exit status 0, or 1 with the error on stderr (a damaged log: the
 * daemon's message).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/xact_log.h"

static int usage(void)
{
    fprintf(stderr, "usage: xact_log_tool append LOG TXID [anchor:|pg:]BIND...\n"
                    "       xact_log_tool list LOG\n");
    return 1;
}

int main(int argc, char **argv)
{
    struct xact_log log;
    struct xact_entry *e = NULL;
    size_t n = 0;
    uint64_t max;
    bool torn;
    char err[1024];

    if (argc < 3 || (strcmp(argv[1], "append") == 0 && argc < 5))
        return usage();
    if (xact_log_open(&log, argv[2], &e, &n, &max, &torn, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (strcmp(argv[1], "list") == 0) {
        for (size_t i = 0; i < n; i++) {
            printf("%llu", (unsigned long long)e[i].txid);
            for (size_t j = 0; j < e[i].nparts; j++)
                printf(" %s%s",
                       e[i].parts[j].flags & XACT_PART_ANCHOR ? "anchor:"
                       : e[i].parts[j].flags & XACT_PART_PG   ? "pg:"
                                                              : "",
                       e[i].parts[j].bind);
            printf("\n");
        }
    } else if (strcmp(argv[1], "append") == 0) {
        size_t np = (size_t)argc - 4, len;
        struct xact_part *parts = calloc(np, sizeof *parts);
        unsigned char *rec;
        if (parts == NULL)
            return 1;
        for (size_t j = 0; j < np; j++) {
            char *a = argv[4 + j];
            if (strncmp(a, "anchor:", 7) == 0)
                parts[j] = (struct xact_part){.bind = a + 7, .flags = XACT_PART_ANCHOR};
            else if (strncmp(a, "pg:", 3) == 0)
                parts[j] = (struct xact_part){.bind = a + 3, .flags = XACT_PART_PG};
            else
                parts[j] = (struct xact_part){.bind = a};
        }
        if (xact_log_encode_commit(strtoull(argv[3], NULL, 10), parts, np, &rec, &len) != 0 ||
            xact_log_append(&log, rec, len, true, false) != 0) {
            fprintf(stderr, "%s: cannot append the record\n", argv[2]);
            return 1;
        }
        free(rec);
        free(parts);
    } else {
        return usage();
    }
    xact_entries_free(e, n);
    xact_log_close(&log);
    return 0;
}
