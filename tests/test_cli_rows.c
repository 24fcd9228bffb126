// The CLI's option rows and JSON output: --help prints each default read from the options
// struct the verb fills (train's are fk_train_defaults'), names are checked when parsed
// (ignoring case), and JSON lines escape what they quote.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

#define GPT2 FK_TEST_DATA "/golden/gpt2"

// Runs the command, expects exit code rc and every one of the NULL-terminated substrings in
// its output; returns the output (malloc'd).
static char *expect(int rc, const char *fmt, const char *arg, ...) {
    char *out;
    int got = run(&out, fmt, FK_CLI, arg);
    if (got != rc) fail_msg("%s: exit %d, expected %d; output:\n%s", fmt, got, rc, out);
    va_list ap;
    va_start(ap, arg);
    for (const char *s; (s = va_arg(ap, const char *));)
        if (!strstr(out, s)) fail_msg("%s: output lacks '%s':\n%s", fmt, s, out);
    va_end(ap);
    return out;
}

static void test_help_defaults(void **s) {
    (void)s;
    fk_train_opts o;
    fk_train_defaults(&o);
    char steps[64], log[64], keep[64];
    snprintf(steps, sizeof steps, "optimizer steps (default %lld)", (long long)o.steps);
    snprintf(log, sizeof log, "steps between metric lines (default %lld)", (long long)o.log_every);
    snprintf(keep, sizeof keep, "checkpoints kept (default %d)", o.keep);
    free(expect(0, "%s train --help", "", steps, log, keep, "--lr X", "(default 0.0003) [> 0 and <= 1]",
                "--fusion NAME", "(default mince) [mince|avgce]", NULL));
    free(expect(0, "%s merge --help", "", "--dtype NAME", "(default f32) [f32|f16|bf16]", "(default 1) [>= -10 and <= 10]", NULL));
    free(expect(0, "%s generate --help", "", "tokens to generate (default 128)", "(default 0.8)", NULL));
}

static void test_choices(void **s) {
    (void)s;
    free(expect(2, "%s train --data x -o y --fusion maxce%s", "", "fusekit train: error: --fusion must be one of mince|avgce (got 'maxce')", NULL));
    free(expect(2, "%s export --model x --gguf y --type q4%s", "", "--type must be one of f32|f16|bf16 (got 'q4')", NULL));
    // names are matched ignoring case: BF16 is bf16 (the run fails later, on the missing model)
    char *out = expect(1, "%s export --model /nonexistent%s --gguf /tmp/nonexistent-dir-fk/m.gguf --type BF16", "", NULL);
    assert_null(strstr(out, "must be one of"));
    free(out);
}

static void test_json_escaped(void **s) {
    (void)s;
    const char *dir = tpath("a \"quoted\"\\dir");
    char q[600];
    snprintf(q, sizeof q, "'%s'", dir);
    char *out = expect(0, "%s data synth --bytes 2000 --probes 2 -o %s", q, NULL);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "dir")->valuestring, dir);
    cJSON_Delete(j);
    free(out);
    out = expect(0, "%s info --json --model %s", GPT2, "\"model_type\":\"gpt2\",\"params\":", NULL);
    j = cJSON_Parse(out);
    assert_non_null(j);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(j, "weights_mb_f32")));
    cJSON_Delete(j);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_help_defaults), cmocka_unit_test(test_choices), cmocka_unit_test(test_json_escaped)};
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
