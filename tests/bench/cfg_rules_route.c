/*
 * The router's cost with a large [tables] map (issue 18), for callgrind:
 * loads the config named on the command line, then routes `count`
 * statements without the cache (route_compute, as a route-cache miss
 * does) and looks up as many names alone (route_table_bind): names the
 * map holds (b0, b1, ... spread over the map), or, with "miss", names it
 * does not (every rule is then tried: the exact ones and the patterns).
 * Not a test: tests/bench/RESULTS.md has the figures and the commands.
 *
 * Usage: cfg_rules_route CONFIG ENTRIES COUNT [miss]
 * Under valgrind --tool=callgrind --instr-atstart=no, only the loop is
 * instrumented (the load of main's quadratic parser would take hours).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config.h"
#include "daemon/route.h"

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_START_INSTRUMENTATION
#define CALLGRIND_STOP_INSTRUMENTATION
#endif

int main(int argc, char **argv)
{
    struct config *cfg = NULL;
    char err[1024];

    if (argc < 4) {
        fprintf(stderr, "usage: %s CONFIG ENTRIES COUNT [miss]\n", argv[0]);
        return 2;
    }
    if (config_load(argv[1], &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    long entries = atol(argv[2]), count = atol(argv[3]);
    const char *prefix = argc > 4 && strcmp(argv[4], "miss") == 0 ? "zz" : "b";
    size_t sum = 0;
    CALLGRIND_START_INSTRUMENTATION;
    for (long i = 0; i < count; i++) {
        char sql[64], name[32];
        struct route r;
        struct route_info ri;
        snprintf(name, sizeof name, "%s%ld", prefix, entries > 0 ? i * 7919 % entries : i);
        snprintf(sql, sizeof sql, "SELECT * FROM %s", name);
        route_compute(cfg, NULL, sql, strlen(sql), &r, &ri);
        sum += (size_t)(r.bind + 1);
        route_clear(&r);
        sqlparse_info_free(&ri);
        sum += route_table_bind(cfg, "", name);
    }
    CALLGRIND_STOP_INSTRUMENTATION;
    printf("%zu\n", sum); /* so that nothing is optimised away */
    config_free(cfg);
    return 0;
}
