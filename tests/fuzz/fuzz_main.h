/*
 * The plain runner every fuzz target shares: built with -DSQLMUX_FUZZ_MAIN
 * (and no -fsanitize=fuzzer), a target runs LLVMFuzzerTestOneInput once on
 * each file named on its command line. Included at the end of a target.
 */
#ifndef SQLMUX_TESTS_FUZZ_MAIN_H
#define SQLMUX_TESTS_FUZZ_MAIN_H

#ifdef SQLMUX_FUZZ_MAIN
#include <stdint.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (f == NULL)
            continue;
        static uint8_t buf[1 << 20];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
    }
    return 0;
}
#endif

#endif
