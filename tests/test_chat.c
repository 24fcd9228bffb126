// Chat templates (fk_chat_render, fk_chat_template_find): the real templates in tests/data/chat
// rendered byte for byte as transformers' apply_chat_template renders them
// (tools/ref/make_chat_golden.py wrote goldens.json), Jinja's whitespace rules, errors, limits,
// and where a model's template is found.
//
// FK_CHAT_SURVEY=GOLDENS.json (a file the same script wrote for another set of templates, beside
// them) prints, per template, how many renderings agree, and asserts nothing else.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

#define CDIR FK_TEST_DATA "/chat"

static void expect_error(const char *tmpl, fk_status st, const char *msg) {
    fk_chat_msg m[1] = {{"user", "Hi"}};
    fk_chat_opts o = {true, "", "", NULL, 0};
    char *out = NULL;
    fk_status got = fk_chat_render(tmpl, m, 1, &o, &out);
    if (got != st || !strstr(fk_last_error(), msg)) fail_msg("template %s: status %d (%s), expected %d with '%s'", tmpl, got, fk_last_error(), st, msg);
    assert_null(out);
}

// One goldens file: each row's template (a file beside it) over its messages; returns the rows
// that agree, and per template in *report when asked.
static int run_goldens(const char *path, int *total, bool survey) {
    size_t n;
    char *text = slurp(path, &n);
    cJSON *rows = cJSON_ParseWithLength(text, n);
    free(text);
    assert_non_null(rows);
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    int ok = 0;
    *total = 0;
    const cJSON *row;
    char last[256] = "";
    int t_ok = 0, t_n = 0;
    char first_err[400] = "";
    cJSON_ArrayForEach(row, rows) {
        const cJSON *src = cJSON_GetObjectItem(row, "source");
        const char *name = src ? "(inline)" : cJSON_GetObjectItem(row, "template")->valuestring;
        if (survey && strcmp(name, last) != 0) {
            if (last[0]) printf("%-60s %d/%d %s\n", last, t_ok, t_n, first_err);
            snprintf(last, sizeof last, "%s", name);
            t_ok = t_n = 0;
            first_err[0] = 0;
        }
        char tp[1024];
        snprintf(tp, sizeof tp, "%s/%s", dir, name);
        char *tmpl = src ? strdup(src->valuestring) : slurp(tp, &n);
        const cJSON *msgs = cJSON_GetObjectItem(row, "messages"), *m;
        fk_chat_msg mv[16];
        int nm = 0;
        cJSON_ArrayForEach(m, msgs) mv[nm++] = (fk_chat_msg){cJSON_GetObjectItem(m, "role")->valuestring, cJSON_GetObjectItem(m, "content")->valuestring};
        fk_chat_var vars[8];
        int nv = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, cJSON_GetObjectItem(row, "vars")) vars[nv++] = (fk_chat_var){v->string, v->valuestring};
        fk_chat_opts o = {cJSON_IsTrue(cJSON_GetObjectItem(row, "add_generation_prompt")), cJSON_GetObjectItem(row, "bos")->valuestring,
                          cJSON_GetObjectItem(row, "eos")->valuestring, vars, nv};
        char *out = NULL;
        fk_status st = fk_chat_render(tmpl, mv, nm, &o, &out);
        const cJSON *want = cJSON_GetObjectItem(row, "expected"), *err = cJSON_GetObjectItem(row, "error");
        bool same;
        char why[400] = "";
        if (want) {
            same = st == FK_OK && strcmp(out, want->valuestring) == 0;
            if (!same && st != FK_OK) snprintf(why, sizeof why, "(%s)", fk_last_error());
            else if (!same) {
                size_t k = 0;
                while (out[k] && out[k] == want->valuestring[k]) k++;
                snprintf(why, sizeof why, "(differs at byte %zu: got [%.30s] want [%.30s])", k, out + k, want->valuestring + k);
            }
        } else {
            // transformers raised: fusekit must refuse with the template's own message where
            // raise_exception gave one
            same = st != FK_OK && (st != FK_ERR_ARG || !strstr(err->valuestring, "") || strstr(fk_last_error(), "chat template"));
            if (st == FK_ERR_ARG && strstr(fk_last_error(), "chat template: ")) same = strstr(err->valuestring, fk_last_error() + strlen("chat template: ")) != NULL;
            if (!same) snprintf(why, sizeof why, "(transformers: %.80s; fusekit: %s)", err->valuestring, st == FK_OK ? "rendered" : fk_last_error());
        }
        if (!same && !survey) fail_msg("%s, row %d: %s", src ? src->valuestring : name, *total, why);
        if (!same && !first_err[0]) snprintf(first_err, sizeof first_err, "%s", why);
        ok += same;
        t_ok += same;
        t_n++;
        (*total)++;
        free(out);
        free(tmpl);
    }
    if (survey && last[0]) printf("%-60s %d/%d %s\n", last, t_ok, t_n, first_err);
    cJSON_Delete(rows);
    return ok;
}

// The committed real templates, and small templates for Jinja's rules (whitespace: trim_blocks,
// lstrip_blocks, '-' and '+'; expressions, filters, tests, methods; statements: loops, loop
// variables, set scoping, namespaces, macros), against transformers 5.25's renderings.
static void test_goldens(void **s) {
    (void)s;
    int total, ok = run_goldens(CDIR "/goldens.json", &total, false);
    assert_int_equal(ok, total);
    assert_true(total >= 50);
}

static void test_errors(void **s) {
    (void)s;
    expect_error("{{ raise_exception('Roles must alternate') }}", FK_ERR_ARG, "chat template: Roles must alternate");
    expect_error("{% if true %}A", FK_ERR_FORMAT, "not closed by {% endif %}");
    expect_error("{{ 'a' ", FK_ERR_FORMAT, "not closed");
    expect_error("{{ 'unterminated }}", FK_ERR_FORMAT, "unterminated string");
    expect_error("line one\n{% include 'other.jinja' %}", FK_ERR_UNSUPPORTED, "line 2: {% include %} is not supported");
    expect_error("{% macro m(a) %}{{ a }}{% endmacro %}{{ m(b=1) }}", FK_ERR_ARG, "macro 'm' has no parameter 'b'");
    expect_error("{{ x | wordwrap }}", FK_ERR_UNSUPPORTED, "the filter 'wordwrap'");
    expect_error("{{ 'a'.zfill(3) }}", FK_ERR_UNSUPPORTED, "zfill");
    expect_error("{{ 1 + 'a' }}", FK_ERR_ARG, "'+' between an integer and a string");
    expect_error("{{ undefined_thing.attr }}", FK_ERR_ARG, "'attr' of an undefined value");
    expect_error("{{ 1 // 0 }}", FK_ERR_ARG, "division by zero");
    expect_error("{% for x in range(2000000) %}{% endfor %}", FK_ERR_ARG, "10^6");
    expect_error("{% for x in range(1000) %}{% for y in range(1000) %}{% endfor %}{% endfor %}{% for z in range(10) %}{% endfor %}", FK_ERR_ARG, "10^6 loop iterations");
    // nesting deeper than 200 levels is refused, not a stack overflow
    char deep[4096] = "{{ ";
    for (int i = 0; i < 300; i++) strcat(deep, "(");
    strcat(deep, "1");
    for (int i = 0; i < 300; i++) strcat(deep, ")");
    strcat(deep, " }}");
    expect_error(deep, FK_ERR_UNSUPPORTED, "200 deep");
    // output bounded: a template that doubles a string 30 times
    expect_error("{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(30) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}", FK_ERR_ARG, "MiB");
    char *out = NULL;
    fk_chat_opts o = {true, NULL, NULL, NULL, 0};
    assert_int_equal(fk_chat_render("x", NULL, -1, &o, &out), FK_ERR_ARG);
    assert_int_equal(fk_chat_render(NULL, NULL, 0, &o, &out), FK_ERR_ARG);
    CHECK(fk_chat_render("{{ messages | length }}", NULL, 0, NULL, &out));
    assert_string_equal(out, "0");
    free(out);
}

// Where a model's template comes from: --chat-template's file; chat_template.jinja before
// tokenizer_config.json's string (or its list's "default"), then chat_template.json; a GGUF's
// tokenizer.chat_template; none found is not an error.
static void test_find(void **s) {
    (void)s;
    char *t = NULL, *where = NULL;
    const char *dir = tpath("m");
    char p[600];
    assert_int_equal(mkdir(dir, 0700), 0);
    CHECK(fk_chat_template_find(dir, NULL, &t, &where));
    assert_null(t);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    const char *cfg = "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, {\"name\": \"default\", \"template\": \"D\"}]}";
    spit(p, cfg, strlen(cfg));
    CHECK(fk_chat_template_find(dir, NULL, &t, &where));
    assert_string_equal(t, "D");
    assert_non_null(strstr(where, "tokenizer_config.json"));
    free(t); free(where);
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    CHECK(fk_chat_template_find(p, NULL, &t, NULL));  // a tokenizer.json path: its folder
    assert_string_equal(t, "D");
    free(t);
    snprintf(p, sizeof p, "%s/chat_template.jinja", dir);
    spit(p, "J", 1);
    CHECK(fk_chat_template_find(dir, NULL, &t, &where));
    assert_string_equal(t, "J");
    assert_non_null(strstr(where, "chat_template.jinja"));
    free(t); free(where);
    CHECK(fk_chat_template_find(dir, p, &t, NULL));
    assert_string_equal(t, "J");
    free(t);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    spit(p, "{\"chat_template\": 5}", 20);
    snprintf(p, sizeof p, "%s/chat_template.jinja", dir);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(fk_chat_template_find(dir, NULL, &t, NULL), FK_ERR_FORMAT);
    assert_null(t);
    // a GGUF's key (written by the package that wrote tests/data/quants' model: none there)
    CHECK(fk_chat_template_find(FK_TEST_DATA "/quants/tiny_llama_quant.gguf", NULL, &t, NULL));
    assert_null(t);
    assert_int_not_equal(fk_chat_template_find(NULL, tpath("absent.jinja"), &t, NULL), FK_OK);
    // a template file over 1 MiB is refused by its size, before it is read (a sparse 2 MiB file)
    snprintf(p, sizeof p, "%s/big.jinja", dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    assert_int_equal(fseek(f, 2 << 20, SEEK_SET), 0);
    fputc('x', f);
    fclose(f);
    assert_int_equal(fk_chat_template_find(NULL, p, &t, NULL), FK_ERR_FORMAT);
    assert_non_null(strstr(fk_last_error(), "big.jinja"));
    assert_null(t);
}

int main(void) {
    // strftime_now's "now": the day the goldens were made (tools/ref/make_chat_golden.py ran on
    // 2026-12-04), in UTC, whatever day the suite runs
    setenv("SOURCE_DATE_EPOCH", "1796385600", 1);  // 2026-12-04 12:00:00 UTC
    setenv("TZ", "UTC0", 1);
    tzset();
    const char *survey = getenv("FK_CHAT_SURVEY");
    if (survey) {
        int total, ok = run_goldens(survey, &total, true);
        printf("agree: %d of %d renderings\n", ok, total);
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_goldens), cmocka_unit_test(test_errors), cmocka_unit_test(test_find),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
