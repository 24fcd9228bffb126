// The CLI's option rows and JSON output: --help prints each default read from the options
// struct the verb fills (train's are fk_train_defaults'), names are checked when parsed
// (ignoring case), JSON lines escape what they quote, and rows render back into a command line
// that parses into the same values (cli_render).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
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
    free(expect(0, "%s train --help", "", steps, log, keep, "--lr FLOAT", "(default 0.0003) [> 0 and <= 1]",
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

// info names the file's own type and the model_type fusekit saves the model as: the phi3 golden
// (fused qkv/gate_up, a window, whole-head RoPE: Mistral's computation) is model_type phi3 saved as
// mistral; a GGUF file gives its general.architecture (JSON: the model_type fusekit reads it as).
static void test_info_types(void **s) {
    (void)s;
    free(expect(0, "%s info --json --model %s", FK_TEST_DATA "/golden/phi3", "\"model_type\":\"phi3\",", "\"saved_as\":\"mistral\"", NULL));
    free(expect(0, "%s info --model %s", FK_TEST_DATA "/golden/phi3", "(model_type phi3; saved as model_type mistral", NULL));
    free(expect(0, "%s info --model %s", GPT2, "(model_type gpt2)\n", NULL));
    const char *g3 = FK_TEST_DATA "/gguf/gemma/gemma3/model.gguf";
    free(expect(0, "%s info --json --model %s", g3, "\"model_type\":\"gemma3_text\",", "\"saved_as\":\"gemma3_text\"", NULL));
    free(expect(0, "%s info --model %s", g3, "(GGUF architecture gemma3; saved as model_type gemma3_text)", NULL));
}

// ---- cli_render: option rows written back as a command line that parses into the same values.

// Every kind of row over one struct.
typedef struct {
    const char *s, *same, *unset;
    int64_t i;
    double x, third;
    bool flag;
    cli_list l;
    int i32, choice;
    float f32;
} probe_args;
#define PROBE_ROWS 12

static void probe_init(probe_args *a) { *a = (probe_args){.s = "plain", .same = "kept", .i = 7, .x = 0.5, .third = 1, .i32 = 3, .f32 = 0.25f}; }

static void probe_rows(probe_args *a, cli_opt *rows) {
    const cli_opt r[PROBE_ROWS] = {
        {"--s", OPT_STR, &a->s, "a string", false, NULL},
        {"--same", OPT_STR, &a->same, "a string left at its default", false, NULL},
        {"--unset", OPT_STR, &a->unset, "a string never set", false, NULL},
        {"-i|--int", OPT_INT, &a->i, "an integer", false, "[-100,100]"},
        {"--x", OPT_FLOAT, &a->x, "a number", false, "[,)"},
        {"--third", OPT_FLOAT, &a->third, "a number that needs 17 digits", false, "[,)"},
        {"--flag", OPT_FLAG, &a->flag, "a flag", false, NULL},
        {"--l", OPT_LIST, &a->l, "a list", false, NULL},
        {"--i32", OPT_I32, &a->i32, "an int left at its default", false, "[0,10]"},
        {"--choice", OPT_CHOICE, &a->choice, "a choice", false, "a|bb|ccc"},
        {"--f32", OPT_F32, &a->f32, "a float", false, "[,)"},
        CLI_ROWS_END,
    };
    memcpy(rows, r, sizeof r);
}

// Runs the rendered line through sh with `fusekit` a function printing its arguments, and reads
// them back: argv[0] is the verb's first word. Returns argc.
static int shell_words(const char *line, char *buf, size_t cap, char **argv, int max) {
    FILE *f = fopen(tpath("render.sh"), "w");
    assert_non_null(f);
    fprintf(f, "fusekit() { printf '%%s\\0' \"$@\"; }\n%s\n", line);
    fclose(f);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "sh '%s'", tpath("render.sh"));
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(buf, 1, cap - 1, p);
    assert_int_equal(pclose(p), 0);
    int argc = 0;
    for (size_t at = 0; at < n && argc < max; at += strlen(buf + at) + 1) argv[argc++] = buf + at;
    return argc;
}

// Renders rows (defaults: the same table at its defaults) with the verb and returns the line.
static char *render_line(const char *verb, const cli_opt *rows, const cli_opt *defaults) {
    char *line = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&line, &n);
    assert_non_null(f);
    cli_render(f, verb, rows, defaults);
    fclose(f);
    return line;
}

static void test_render_round_trip(void **s) {
    (void)s;
    probe_args a, d, b;
    cli_opt rows[PROBE_ROWS], defs[PROBE_ROWS], back[PROBE_ROWS];
    probe_init(&a);
    probe_init(&d);
    probe_init(&b);
    probe_rows(&a, rows);
    probe_rows(&d, defs);
    probe_rows(&b, back);
    a.s = "it's a \"dir\" with $HOME, `x` and \\ in it";
    a.i = -5;
    a.x = 3e-3;
    a.third = 1.0 / 3;
    a.flag = true;
    a.l = (cli_list){{"one", "-two", "three four"}, 3};
    a.choice = 2;
    a.f32 = 0.1f;
    char *line = render_line("probe sub", rows, defs);
    print_message("%s\n", line);
    // rows at their defaults are left out; the shortest number that reads back is written
    assert_null(strstr(line, "--same"));
    assert_null(strstr(line, "--unset"));
    assert_null(strstr(line, "--i32"));
    assert_non_null(strstr(line, "'--x' '0.003'"));
    assert_non_null(strstr(line, "'--f32' '0.1'"));
    assert_non_null(strstr(line, "'--choice' 'ccc'"));
    char buf[4096], *argv[64];
    int argc = shell_words(line, buf, sizeof buf, argv, 64);
    free(line);
    assert_true(argc >= 2);
    assert_string_equal(argv[0], "probe");
    assert_string_equal(argv[1], "sub");
    assert_int_equal(cli_parse(argc - 1, argv + 1, back, "usage: fusekit probe sub"), 0);
    assert_string_equal(b.s, a.s);
    assert_string_equal(b.same, "kept");
    assert_null(b.unset);
    assert_int_equal(b.i, -5);
    assert_true(b.x == a.x && b.third == a.third && b.f32 == a.f32);
    assert_true(b.flag);
    assert_int_equal(b.l.n, 3);
    for (int i = 0; i < 3; i++) assert_string_equal(b.l.v[i], a.l.v[i]);
    assert_int_equal(b.i32, 3);
    assert_int_equal(b.choice, 2);
}

// A verb's own rows: tokenizer train's, rendered from set values and parsed back by its table.
static void test_render_verb_rows(void **s) {
    (void)s;
    cli_tok_train_args a, d, b;
    cli_opt rows[CLI_TOK_TRAIN_ROWS], defs[CLI_TOK_TRAIN_ROWS], back[CLI_TOK_TRAIN_ROWS];
    cli_tok_train_args_init(&a);
    cli_tok_train_args_init(&d);
    cli_tok_train_args_init(&b);
    assert_int_equal(cli_tok_train_rows(&a, rows), CLI_TOK_TRAIN_ROWS - 1);
    cli_tok_train_rows(&d, defs);
    cli_tok_train_rows(&b, back);
    a.data = (cli_list){{"corpus/a b.txt"}, 1};
    a.o.vocab_size = 512;
    a.kind = 1;
    a.o.split_digits = true;
    a.out.path = "tokenizers/B";
    char *line = render_line("tokenizer train", rows, defs);
    assert_string_equal(line, "fusekit 'tokenizer' 'train' '--data' 'corpus/a b.txt' '--vocab' '512' '--kind' 'spm' '--split-digits' "
                              "'-o' 'tokenizers/B'");
    char buf[4096], *argv[64];
    int argc = shell_words(line, buf, sizeof buf, argv, 64);
    free(line);
    assert_int_equal(cli_parse(argc - 1, argv + 1, back, "usage: fusekit tokenizer train"), 0);
    assert_int_equal(b.data.n, 1);
    assert_string_equal(b.data.v[0], "corpus/a b.txt");
    assert_int_equal(b.o.vocab_size, 512);
    assert_int_equal(b.kind, 1);
    assert_true(b.o.split_digits);
    assert_string_equal(b.out.path, "tokenizers/B");
    assert_string_equal(b.o.pre, d.o.pre);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_help_defaults), cmocka_unit_test(test_choices), cmocka_unit_test(test_json_escaped),
                                       cmocka_unit_test(test_info_types), cmocka_unit_test(test_render_round_trip), cmocka_unit_test(test_render_verb_rows)};
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
