/*
 * libFuzzer target for conf/config.c: each input is written as a config
 * file into a private temporary folder and loaded with config_load(); a
 * loaded config is also printed (to /dev/null) and routed, then freed. The
 * folder holds the example's schema/{app,second,memory}.sql so that inputs
 * naming them get past the schema check.
 *
 * Build: clang -std=c11 -D_GNU_SOURCE -I. -g -O1 \
 *          -fsanitize=fuzzer,address,undefined \
 *          tests/fuzz/fuzz_config.c conf/config.c -linih -o build/fuzz_config
 * Run:   build/fuzz_config tests/fuzz/corpus/config
 * With -DSQLMUX_FUZZ_MAIN (and no -fsanitize=fuzzer) it builds a plain
 * program that runs the files named on its command line once each.
 */
#include "conf/config.h"
#include "daemon/route.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The schema files of conf/sqlmux.ini, created empty in schema/. */
static const char *const fuzz_schemas[] = {"app.sql", "second.sql", "memory.sql"};
static char fuzz_dir[64];
static char fuzz_path[96];

/* Removes the temporary folder at exit. */
static void fuzz_cleanup(void)
{
    char p[128];
    for (size_t i = 0; i < sizeof fuzz_schemas / sizeof fuzz_schemas[0]; i++) {
        snprintf(p, sizeof p, "%s/schema/%s", fuzz_dir, fuzz_schemas[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/schema", fuzz_dir);
    rmdir(p);
    unlink(fuzz_path);
    rmdir(fuzz_dir);
}

/* Creates the temporary folder once per process. */
static int fuzz_setup(void)
{
    if (fuzz_dir[0] != '\0')
        return 0;
    snprintf(fuzz_dir, sizeof fuzz_dir, "/tmp/sqlmux-fuzz-config-XXXXXX");
    if (mkdtemp(fuzz_dir) == NULL)
        return -1;
    char schema[128];
    snprintf(schema, sizeof schema, "%s/schema", fuzz_dir);
    mkdir(schema, 0700);
    for (size_t i = 0; i < sizeof fuzz_schemas / sizeof fuzz_schemas[0]; i++) {
        snprintf(schema, sizeof schema, "%s/schema/%s", fuzz_dir, fuzz_schemas[i]);
        FILE *f = fopen(schema, "w");
        if (f != NULL)
            fclose(f);
    }
    snprintf(fuzz_path, sizeof fuzz_path, "%s/sqlmux.ini", fuzz_dir);
    atexit(fuzz_cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fuzz_setup() != 0)
        abort();
    FILE *f = fopen(fuzz_path, "w");
    if (f == NULL)
        abort();
    if (size > 0 && fwrite(data, 1, size, f) != size)
        abort();
    fclose(f);

    struct config *cfg = NULL;
    char err[512];
    if (config_load(fuzz_path, &cfg, err, sizeof err) == 0) {
        /* Whatever loaded must be self-consistent. */
        if (cfg->nbinds == 0 || strcmp(cfg->binds[0].name, "default") != 0)
            abort();
        for (size_t i = 0; i < cfg->nrules; i++)
            if (cfg->rules[i].bind >= cfg->nbinds)
                abort();
        if (route_table_bind(cfg, "main", "test2") >= cfg->nbinds ||
            route_table_bind(cfg, "", "audit_log") >= cfg->nbinds)
            abort();
        FILE *out = fopen("/dev/null", "w");
        if (out != NULL) {
            config_print(cfg, out);
            fclose(out);
        }
        config_free(cfg);
    } else if (cfg != NULL || strncmp(err, fuzz_path, strlen(fuzz_path)) != 0) {
        abort();
    }
    return 0;
}

#include "tests/fuzz/fuzz_main.h"
