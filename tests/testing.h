/* testing.h - the small harness every C test uses.
 *
 * CHECK* macros record a failure with file:line and go on, so one run reports every
 * broken case. Each test binary ends with testing_finish(), which prints
 * "N passed, N failed" and returns the process exit code: 1 when a check failed, and also
 * when no check ran at all (a test that returned early did not test anything). A test that
 * cannot run here (a tool or file this machine lacks) says so with testing_skip(), which
 * exits with TESTING_SKIP (77), the code ctest reports as "Skipped" (SKIP_RETURN_CODE in
 * tests/CMakeLists.txt); a skip after failed checks still fails.
 *
 * Reference data: a test named test_X may have tests/fixtures/gen_X.py, run by ctest
 * first (as a fixture) with /usr/bin/python3 and torch; it writes its inputs and
 * expected outputs under $LION_BUILD_DIR/fixtures/, found with testing_fixture(). */
#ifndef LION_TESTING_H
#define LION_TESTING_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

extern int testing_passed, testing_failed;

/* Exit status of a skipped test (automake's and ctest's convention). */
#define TESTING_SKIP 77

void testing_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* "N passed, N failed"; returns 1 when a check failed or when none ran, 0 otherwise. */
int testing_finish(void);
/* Ends the test as skipped: prints "SKIP: <reason>" and exits with TESTING_SKIP, or with 1
 * when checks already failed (a skip never hides a failure). */
void testing_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Path of a fixture file in $LION_BUILD_DIR/fixtures (static buffer, valid until the next call). */
const char *testing_fixture(const char *name);
/* A file's bytes (malloc'ed, with a NUL after the last byte so text can be parsed), or NULL. */
unsigned char *testing_read_file(const char *path, size_t *len);
/* max |a-b| / max(max|b|, tiny): the relative error the issues state tolerances in. */
double testing_rel_err(const float *a, const float *b, size_t n);
double testing_max_abs_err(const float *a, const float *b, size_t n);
/* A fixture tensor: key's data when it holds exactly n values of dtype (a tensor.h DTYPE_*),
 * else a failed check at the caller's line naming the key, and NULL. */
struct safetensors_file;
const void *testing_tensor_at(const char *file, int line, struct safetensors_file *f, const char *key, int dtype,
                              size_t n);
#define testing_tensor(f, key, dtype, n) testing_tensor_at(__FILE__, __LINE__, (f), (key), (dtype), (n))
#define testing_floats(f, key, n) ((const float *)testing_tensor((f), (key), DTYPE_F32, (n)))
#define testing_ints(f, key, n) ((const int32_t *)testing_tensor((f), (key), DTYPE_I32, (n)))
/* A model fixture of gen_X.py: <name>.safetensors opened as weights (keys under prefix) and
 * <name>_io.safetensors (the inputs and the reference's outputs), both in the fixtures folder.
 * 0, or -1 after a failed check naming the file, with neither left open. */
struct weights;
int testing_open_model(const char *name, const char *prefix, struct weights *w, struct safetensors_file **io);
/* Tokenizer cases of a fixture (gen_tokenizers.py, gen_bpe.py): one "hex(text) TAB ids TAB
 * hex(decoded)" line each, the ids a reference tokenizer gave (at most max_ids kept). NULL
 * with *n 0 when the file cannot be read; free with testing_free_text_cases. */
typedef struct testing_text_case {
    char *text, *decoded;
    int32_t *ids;
    size_t n_ids;
} testing_text_case;
testing_text_case *testing_read_text_cases(const char *fixture_name, size_t max_ids, size_t *n);
void testing_free_text_cases(testing_text_case *cases, size_t n);
/* The index of x's largest value (the first of equal ones): a greedy token. */
int testing_argmax(const float *x, int n);

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (cond) testing_passed++;                                                 \
        else testing_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                  \
    } while (0)

#define CHECK_MSG(cond, ...)                                                        \
    do {                                                                            \
        if (cond) testing_passed++;                                                 \
        else testing_fail(__FILE__, __LINE__, __VA_ARGS__);                         \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                          \
    do {                                                                            \
        long long va_ = (long long)(a), vb_ = (long long)(b);                       \
        if (va_ == vb_) testing_passed++;                                           \
        else testing_fail(__FILE__, __LINE__, "%s == %lld, expected %s == %lld", #a, va_, #b, vb_); \
    } while (0)

/* Relative error of n floats against a reference, within tol. */
#define CHECK_CLOSE(got, want, n, tol, what)                                        \
    do {                                                                            \
        double e_ = testing_rel_err((got), (want), (n));                            \
        if (e_ <= (tol)) testing_passed++;                                          \
        else testing_fail(__FILE__, __LINE__, "%s: relative error %.3g > %.3g", (what), e_, (double)(tol)); \
    } while (0)

/* A substring that an error message must contain (error messages are part of the API). */
#define CHECK_CONTAINS(haystack, needle)                                            \
    do {                                                                            \
        const char *h_ = (haystack);                                                \
        if (h_ && strstr(h_, (needle))) testing_passed++;                           \
        else testing_fail(__FILE__, __LINE__, "\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", (needle)); \
    } while (0)

#endif
