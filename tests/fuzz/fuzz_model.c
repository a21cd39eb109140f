/*
 * fuzz_model.c - libFuzzer target: the model interpreter of tests/model/
 * on the fuzzer's bytes.  A broken invariant aborts with its message, so
 * libFuzzer keeps the input as a crash.
 *
 * Built and run by `make fuzz` (tests/reliability.mk) with clang,
 * -fsanitize=fuzzer,address,undefined.  Seeds: tests/fuzz/corpus/ (short
 * clean runs) and tests/fuzz/regressions/ (every input that once broke the
 * library, replayed by check_model as well).  A new crash file goes into
 * tests/fuzz/regressions/ with a name saying what it broke.
 */
#include "../model/model.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mm_result r;
    mm_run_bytes(data, size, NULL, &r);
    if (r.failed) {
        fprintf(stderr, "invariant broken: %s\n", r.message);
        abort();
    }
    return 0;
}
