/*
 * Unit tests of the reply encoder in proto/codec.c (issue 21): the '*'
 * header and '=' row lines built field by field, and the +OK status lines;
 * and the one percent-decoder of URL parts.
 */
#include <stdint.h>
#include <stdlib.h>

#include "proto/codec.h"
#include "tests/unit/unit.h"

static void test_header_and_row(void)
{
    struct buf out = BUF_INIT;
    struct codec_row r;

    codec_header_begin(&r, &out);
    codec_field_str(&r, "a\tb");
    codec_field_str(&r, "TEXT");
    CHECK(codec_row_end(&r) == 0);
    codec_row_begin(&r, &out);
    codec_field_int(&r, -7);
    codec_field_real(&r, 1.0);
    codec_field_null(&r);
    codec_field_str(&r, NULL);
    codec_field_blob(&r, "\x01\xff", 2);
    codec_field_text(&r, "x\ny", 3);
    codec_field_raw(&r, "\\xab", 4);
    CHECK(codec_row_end(&r) == 0);
    CHECK_STR(out.data, "*a\\tb\tTEXT\n=-7\t1.0\t\\N\t\\N\t\\x01ff\tx\\ny\t\\xab\n");
    buf_free(&out);
}

static void test_empty_row(void)
{
    struct buf out = BUF_INIT;
    struct codec_row r;

    codec_row_begin(&r, &out);
    CHECK(codec_row_end(&r) == 0);
    codec_header_begin(&r, &out);
    CHECK(codec_row_end(&r) == 0);
    CHECK_STR(out.data, "=\n*\n");
    buf_free(&out);
}

static void test_status_lines(void)
{
    struct buf out = BUF_INIT;
    int64_t last = 42;

    CHECK(codec_put_ok_rows(&out, 3) == 0);
    CHECK(codec_put_ok_changes(&out, 0, NULL) == 0);
    CHECK(codec_put_ok_changes(&out, 2, &last) == 0);
    CHECK(codec_put_ok(&out, NULL) == 0);
    CHECK(codec_put_ok(&out, "") == 0);
    CHECK(codec_put_ok(&out, "bind=main") == 0);
    CHECK_STR(out.data, "+OK rows=3\n+OK changes=0\n+OK changes=2 last_id=42\n+OK\n+OK\n+OK bind=main\n");
    buf_free(&out);
    /* The longest status line of a write: both numbers at their widest. */
    last = INT64_MIN;
    CHECK(codec_put_ok_changes(&out, INT64_MIN, &last) == 0);
    last = INT64_MAX;
    CHECK(codec_put_ok_changes(&out, INT64_MAX, &last) == 0);
    CHECK_STR(out.data, "+OK changes=-9223372036854775808 last_id=-9223372036854775808\n"
                        "+OK changes=9223372036854775807 last_id=9223372036854775807\n");
    buf_free(&out);
}

/* A failed append leaves no half line: the row is cut back to its start. */
static void test_failed_row_is_cut(void)
{
    struct buf out = BUF_INIT;
    struct codec_row r;

    CHECK(buf_puts(&out, "+OK\n") == 0);
    codec_row_begin(&r, &out);
    codec_field_str(&r, "kept?");
    r.rc = -1; /* as after an allocation failure */
    codec_field_str(&r, "no");
    CHECK(codec_row_end(&r) == -1);
    CHECK_STR(out.data, "+OK\n");
    CHECK(out.len == 4);
    buf_free(&out);
}

static void test_pct_decode(void)
{
    char d[8];
    size_t n = 99;

    CHECK(codec_pct_decode("a%41b%2f", 8, d, 7, &n) == 0);
    CHECK_STR(d, "aAb/");
    CHECK(n == 4);
    CHECK(codec_pct_decode("", 0, d, 7, &n) == 0 && n == 0 && d[0] == '\0');
    CHECK(codec_pct_decode("%00", 3, d, 7, &n) == CODEC_PCT_BAD);
    CHECK(codec_pct_decode("%4", 2, d, 7, &n) == CODEC_PCT_BAD);
    CHECK(codec_pct_decode("%g1", 3, d, 7, &n) == CODEC_PCT_BAD);
    CHECK(codec_pct_decode("ab%", 3, d, 7, &n) == CODEC_PCT_BAD);
    CHECK(codec_pct_decode("abc", 3, d, 3, &n) == 0 && n == 3);
    CHECK(codec_pct_decode("abcd", 4, d, 3, &n) == CODEC_PCT_TOOLONG);
    CHECK(codec_pct_decode("abcd%zz", 7, d, 3, &n) == CODEC_PCT_TOOLONG); /* first error wins */
}

int main(void)
{
    RUN(test_header_and_row);
    RUN(test_empty_row);
    RUN(test_status_lines);
    RUN(test_failed_row_is_cut);
    RUN(test_pct_decode);
    UNIT_MAIN_END;
}
