/*
 * Minimal unit-test support shared by the tests in tests/unit/.
 *
 * A test is a plain `static void name(void)`; CHECK() records a failed
 * expectation with file:line and lets the test go on. RUN() runs one test
 * and prints a TAP-style line, "ok - name" or "not ok - name", which
 * tests/run counts for the suite's closing "N passed, N failed" line.
 * UNIT_MAIN_END returns non-zero when any test failed.
 */
#ifndef SQLMUX_TESTS_UNIT_H
#define SQLMUX_TESTS_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_failed_checks; /* failed CHECKs in the running test */
static int unit_failed_tests;  /* tests with at least one failed CHECK */

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            unit_failed_checks++;                                                                            \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);                       \
        }                                                                                                    \
    } while (0)

/* Compare two NUL-terminated strings, printing both on mismatch. */
#define CHECK_STR(got, want)                                                                                 \
    do {                                                                                                     \
        const char *unit_g_ = (got), *unit_w_ = (want);                                                      \
        if (unit_g_ == NULL || unit_w_ == NULL ? unit_g_ != unit_w_ : strcmp(unit_g_, unit_w_) != 0) {       \
            unit_failed_checks++;                                                                            \
            fprintf(stderr, "  %s:%d: got \"%s\", want \"%s\"\n", __FILE__, __LINE__,                        \
                    unit_g_ ? unit_g_ : "(null)", unit_w_ ? unit_w_ : "(null)");                             \
        }                                                                                                    \
    } while (0)

#define RUN(test)                                                                                            \
    do {                                                                                                     \
        unit_failed_checks = 0;                                                                              \
        test();                                                                                              \
        if (unit_failed_checks) {                                                                            \
            unit_failed_tests++;                                                                             \
            printf("not ok - %s\n", #test);                                                                  \
        } else {                                                                                             \
            printf("ok - %s\n", #test);                                                                      \
        }                                                                                                    \
        fflush(stdout);                                                                                      \
    } while (0)

#define UNIT_MAIN_END return unit_failed_tests ? 1 : 0

#endif
