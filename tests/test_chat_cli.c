// fusekit chat and generate --chat as a user runs them: a small model whose BPE tokenizer has
// ChatML's control tokens and SmolLM2's chat template (tests/data/chat) beside it. The prompt is
// the template's rendering (with the tokenizer's BOS/EOS texts) encoded with its control tokens
// as single ids and nothing added; a conversation carries over turns, /reset forgets it, its
// oldest turns go when the context fills; greedy replies are the same in both verbs; and in a
// real terminal (tmux) the chat prompts, answers and exits.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

static char model[300], tmpl[400];

static int setup(void **s) {
    if (tmpdir_setup(s) != 0) return -1;
    char text[300];
    snprintf(text, sizeof text, "%s/conv.txt", tmpdir);
    FILE *f = fopen(text, "w");
    if (!f) return -1;
    const char *q[] = {"What is two plus two?", "Name a colour.", "Say hello.", "Which animal barks?"},
               *a[] = {"Four.", "Blue.", "Hello!", "A dog barks."};
    for (int i = 0; i < 300; i++) fprintf(f, "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n%s<|im_end|>\n", q[i % 4], a[i % 4]);
    fclose(f);
    char *out;
    int rc = run(&out, "%s tokenizer train --data %s --vocab 300 --special '<|endoftext|>' --special '<|im_start|>' --special '<|im_end|>' -o %s/tok",
                 FK_CLI, text, tmpdir);
    if (rc != 0) { fprintf(stderr, "%s\n", out); free(out); return -1; }
    free(out);
    // the template beside the tokenizer travels with it: train saves it into the model's
    // tokenizer_config.json, export into the GGUF (test_saved_template)
    snprintf(tmpl, sizeof tmpl, "%s/tok/chat_template.jinja", tmpdir);
    size_t n;
    char *t = slurp(FK_TEST_DATA "/chat/SmolLM2-135M-Instruct.jinja", &n);
    spit(tmpl, t, n);
    free(t);
    snprintf(model, sizeof model, "%s/m", tmpdir);
    rc = run(&out, "%s train --data %s --tokenizer %s/tok -o %s --steps 30 --batch 4 --ctx 160 --d-model 32 --layers 2 --heads 2 --lr 1e-2",
             FK_CLI, text, tmpdir, model);
    if (rc != 0) { fprintf(stderr, "%s\n", out); free(out); return -1; }
    free(out);
    return 0;
}

// The text between "prompt (" ... "):\n" and the next "\ngenerated"/"\n" marker: the k-th printed prompt.
static char *nth_prompt(const char *out, int k, long *tokens) {
    const char *p = out;
    for (int i = 0; i <= k; i++) {
        p = strstr(p, "prompt (");
        if (!p) return NULL;
        if (i < k) p++;
    }
    const char *t = strstr(p, " tokens");
    const char *c = t;
    while (c > p && c[-1] >= '0' && c[-1] <= '9') c--;
    *tokens = strtol(c, NULL, 10);
    const char *b = strstr(p, "):\n");
    if (!b) return NULL;
    b += 3;
    const char *next = strstr(b, "prompt ("), *e = NULL;  // the prompt ends with the last assistant header before the next one
    for (const char *x = strstr(b, "<|im_start|>assistant\n"); x && (!next || x < next); x = strstr(x + 1, "<|im_start|>assistant\n")) e = x;
    if (!e) return NULL;
    e += strlen("<|im_start|>assistant\n");
    return strndup(b, (size_t)(e - b));
}

static void test_generate_chat(void **s) {
    (void)s;
    char *out;
    int rc = run(&out, "%s generate --model %s --chat --system 'Be brief.' --prompt 'Say hello.' --greedy -n 6 --show-prompt", FK_CLI, model);
    if (rc != 0) fail_msg("generate --chat failed: %s", out);
    long tokens;
    char *prompt = nth_prompt(out, 0, &tokens);
    assert_non_null(prompt);
    // the rendering as fk_chat_render gives it (its agreement with transformers: test_chat)
    size_t n;
    char *t = slurp(tmpl, &n);
    fk_chat_msg m[2] = {{"system", "Be brief."}, {"user", "Say hello."}};
    fk_chat_opts o = {true, "<|endoftext|>", "<|endoftext|>", NULL, 0};
    char *want;
    CHECK(fk_chat_render(t, m, 2, &o, &want));
    assert_string_equal(prompt, want);
    assert_non_null(strstr(out, "template from "));
    // encoded with the control tokens as single ids, nothing added: the count tokenizer encode gives
    char *q = NULL, *ids;
    size_t wl = strlen(want);
    char wpath[400];
    snprintf(wpath, sizeof wpath, "%s/want.txt", tmpdir);
    spit(wpath, want, wl);
    assert_int_equal(run(&ids, "%s tokenizer encode --tokenizer %s --file %s --parse-special", FK_CLI, model, wpath), 0);
    long count = 0;
    for (q = strtok(ids, " \n"); q; q = strtok(NULL, " \n")) count++;
    assert_int_equal(count, tokens);
    assert_true(tokens < (long)wl / 2);  // "<|im_start|>" and "<|im_end|>" are one id each, not 12 bytes
    free(ids);
    free(want);
    free(t);
    free(prompt);
    free(out);
    // the chat's first greedy reply is generate --chat's
    char *g, *c, in[400];
    assert_int_equal(run(&g, "{ %s generate --model %s --chat --prompt 'Name a colour.' --greedy -n 8 2>/dev/null; }", FK_CLI, model), 0);
    snprintf(in, sizeof in, "%s/in.txt", tmpdir);
    spit(in, "Name a colour.\n", 15);
    assert_int_equal(run(&c, "{ %s chat --model %s --greedy -n 8 < %s 2>/dev/null; }", FK_CLI, model, in), 0);
    g[strcspn(g, "\n")] = 0;
    c[strcspn(c, "\n")] = 0;
    assert_string_equal(g, c);
    free(g);
    free(c);
}

static void test_conversation(void **s) {
    (void)s;
    char in[400], *out;
    snprintf(in, sizeof in, "%s/turns.txt", tmpdir);
    const char *turns = "What is two plus two?\nName a colour.\n/reset\nSay hello.\n";
    spit(in, turns, strlen(turns));
    int rc = run(&out, "%s chat --model %s --system 'S.' --greedy -n 4 --show-prompt < %s", FK_CLI, model, in);
    if (rc != 0) fail_msg("chat failed: %s", out);
    long t0, t1, t2;
    char *p0 = nth_prompt(out, 0, &t0), *p1 = nth_prompt(out, 1, &t1), *p2 = nth_prompt(out, 2, &t2);
    assert_non_null(p0);
    assert_non_null(p1);
    assert_non_null(p2);
    // the second prompt holds the first turn and its reply; after /reset only the system message stays
    assert_true(strncmp(p1, p0, strlen(p0)) == 0);
    assert_non_null(strstr(p1, "Name a colour."));
    assert_true(t1 > t0);
    // the second turn runs only what follows the prefix it shares with the cached context (the
    // first turn's prompt and reply): all but the new tokens are reused
    const char *r0 = strstr(out, " prompt tokens run, "), *r1 = r0 ? strstr(r0 + 1, " prompt tokens run, ") : NULL;
    assert_non_null(r1);
    long run0 = 0, reused0 = -1, run1 = 0, reused1 = -1;
    while (r0 > out && r0[-1] != '(') r0--;
    while (r1 > out && r1[-1] != '(') r1--;
    assert_int_equal(sscanf(r0, "%ld prompt tokens run, %ld reused", &run0, &reused0), 2);
    assert_int_equal(sscanf(r1, "%ld prompt tokens run, %ld reused", &run1, &reused1), 2);
    assert_int_equal(reused0, 0);
    assert_int_equal(run0, t0);
    assert_int_equal(run1 + reused1, t1);
    assert_true(reused1 >= t0 && run1 < t1 - t0);
    assert_null(strstr(p2, "two plus two"));
    assert_non_null(strstr(p2, "<|im_start|>system\nS.<|im_end|>"));
    assert_non_null(strstr(out, "(conversation reset)"));
    free(p0); free(p1); free(p2);
    free(out);
    // a long conversation in a 160-token context: the oldest turns go, the system message stays
    char *many = malloc(4096);
    many[0] = 0;
    for (int i = 0; i < 8; i++) strcat(many, "Which animal barks?\n");
    spit(in, many, strlen(many));
    free(many);
    rc = run(&out, "%s chat --model %s --system 'S.' --greedy -n 8 --show-prompt < %s", FK_CLI, model, in);
    if (rc != 0) fail_msg("chat failed: %s", out);
    for (int k = 0; k < 8; k++) {
        long tk;
        char *pk = nth_prompt(out, k, &tk);
        if (!pk) fail_msg("prompt %d missing:\n%s", k, out);
        assert_true(tk + 8 <= 160);
        int asked = 0;
        for (const char *x = strstr(pk, "Which animal barks?"); x; x = strstr(x + 1, "Which animal barks?")) asked++;
        if (k == 7 && !(tk > 100 && asked < 8)) fail_msg("the last prompt: %ld tokens, %d questions", tk, asked);
        assert_non_null(strstr(pk, "<|im_start|>system\nS.<|im_end|>"));
        free(pk);
    }
    free(out);
}

static void test_errors(void **s) {
    (void)s;
    char dir[400], cmd[1200];
    snprintf(dir, sizeof dir, "%s/plain", tmpdir);
    // the model's tokenizer_config.json without its chat_template
    snprintf(cmd, sizeof cmd, "cp -r %s %s", model, dir);
    assert_int_equal(system(cmd), 0);
    char cfgp[500];
    snprintf(cfgp, sizeof cfgp, "%s/tokenizer_config.json", dir);
    size_t n;
    char *cfg = slurp(cfgp, &n);
    {
        cJSON *j = cJSON_Parse(cfg);
        assert_non_null(cJSON_GetObjectItem(j, "chat_template"));
        cJSON_DeleteItemFromObject(j, "chat_template");
        char *o = cJSON_Print(j);
        spit(cfgp, o, strlen(o));
        free(o);
        cJSON_Delete(j);
    }
    free(cfg);
    RUN_FAILS(1, "has no chat template", "%s chat --model %s < /dev/null", FK_CLI, dir);
    RUN_FAILS(1, "--chat-template FILE", "%s generate --model %s --chat --prompt hi", FK_CLI, dir);
    RUN_OK("%s generate --model %s --chat --chat-template %s --prompt hi -n 2 2>/dev/null", FK_CLI, dir, tmpl);
    RUN_FAILS(2, "go with --chat", "%s generate --model %s --system x --prompt hi", FK_CLI, model);
    RUN_FAILS(2, "--chat takes the prompt as text", "%s generate --model %s --chat --prompt-ids '1 2'", FK_CLI, model);
    // a template that raises names its message
    char bad[400];
    snprintf(bad, sizeof bad, "%s/bad.jinja", tmpdir);
    spit(bad, "{{ raise_exception('System role not supported') }}", 50);
    RUN_FAILS(1, "System role not supported", "%s generate --model %s --chat --chat-template %s --prompt hi", FK_CLI, model, bad);
}

// The template travels with the tokenizer: in the trained model's tokenizer_config.json, and
// in a GGUF export (tokenizer.chat_template), where chat finds it.
static void test_saved_template(void **s) {
    (void)s;
    char p[500];
    snprintf(p, sizeof p, "%s/tokenizer_config.json", model);
    size_t n;
    char *cfg = slurp(p, &n), *t = slurp(tmpl, &n);
    cJSON *j = cJSON_Parse(cfg);
    const cJSON *ct = cJSON_GetObjectItem(j, "chat_template");
    assert_true(cJSON_IsString(ct));
    assert_string_equal(ct->valuestring, t);
    cJSON_Delete(j);
    free(cfg);
    RUN_OK("%s export --model %s --gguf %s/m.gguf", FK_CLI, model, tmpdir);
    fk_gguf g;
    snprintf(p, sizeof p, "%s/m.gguf", tmpdir);
    CHECK(fk_gguf_open(p, &g));
    fk_gguf_str v;
    CHECK(fk_gguf_get_str(&g, "tokenizer.chat_template", &v));
    assert_int_equal(v.n, strlen(t));
    assert_memory_equal(v.s, t, v.n);
    fk_gguf_close(&g);
    free(t);
    char *a, *b, in[400];
    snprintf(in, sizeof in, "%s/in1.txt", tmpdir);
    spit(in, "Say hello.\n", 11);
    assert_int_equal(run(&a, "{ %s chat --model %s --greedy -n 6 < %s 2>/dev/null; }", FK_CLI, model, in), 0);
    assert_int_equal(run(&b, "{ %s chat --model %s/m.gguf --greedy -n 6 < %s 2>/dev/null; }", FK_CLI, tmpdir, in), 0);
    assert_string_equal(a, b);  // the same template, tokenizer and weights (f32 export)
    free(a);
    free(b);
}

// A line of the screen that is the chat's empty "> " prompt (tmux trims the trailing space), after from.
static bool empty_prompt_line(const char *screen, const char *from) {
    for (const char *l = from; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (l[0] == '>' && (l[1] == '\n' || l[1] == 0 || (l[1] == ' ' && (l[2] == '\n' || l[2] == 0)))) return true;
    (void)screen;
    return false;
}

// In a real terminal: the "> " prompt, the reply, /exit ends the program.
static void test_tmux(void **s) {
    (void)s;
    if (system("command -v tmux > /dev/null 2>&1") != 0) { print_message("  skipped: no tmux\n"); return; }
    char sock[64], cmd[2000], *out = NULL;
    snprintf(sock, sizeof sock, "fkchat%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "tmux -L %s new-session -d -x 150 -y 40 -s chat '%s chat --model %s --greedy -n 6 --threads 1; sleep 30'",
             sock, FK_CLI, model);
    assert_int_equal(system(cmd), 0);
    bool prompted = false, answered = false, ended = false;
    for (int i = 0; i < 600 && !prompted; i++) {  // up to 60 s for the model to load
        free(out);
        run(&out, "tmux -L %s capture-pane -p -t chat", sock);
        prompted = empty_prompt_line(out, out);
        if (!prompted) usleep(100000);
    }
    snprintf(cmd, sizeof cmd, "tmux -L %s send-keys -t chat 'Say hello.' Enter", sock);
    assert_int_equal(system(cmd), 0);
    for (int i = 0; i < 600 && !answered; i++) {  // the second "> " comes after the reply
        free(out);
        run(&out, "tmux -L %s capture-pane -p -t chat", sock);
        char *first = strstr(out, "> Say hello.");
        answered = first && empty_prompt_line(out, strchr(first, '\n'));
        if (!answered) usleep(100000);
    }
    snprintf(cmd, sizeof cmd, "tmux -L %s send-keys -t chat /exit Enter", sock);
    assert_int_equal(system(cmd), 0);
    for (int i = 0; i < 300 && !ended; i++) {  // fusekit exits: the shell's "sleep" leaves no "> " behind a new prompt
        free(out);
        run(&out, "tmux -L %s list-panes -t chat -F '#{pane_current_command}'", sock);
        ended = strstr(out, "sleep") != NULL;
        if (!ended) usleep(100000);
    }
    char *screen = NULL;
    run(&screen, "tmux -L %s capture-pane -p -t chat", sock);
    snprintf(cmd, sizeof cmd, "tmux -L %s kill-server 2>/dev/null", sock);
    if (system(cmd) != 0) print_message("  (tmux server already gone)\n");
    if (!prompted || !answered || !ended) fail_msg("prompted %d answered %d ended %d; screen:\n%s", prompted, answered, ended, screen);
    assert_non_null(strstr(screen, "chat template from"));
    free(screen);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_chat), cmocka_unit_test(test_conversation), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_saved_template),
        cmocka_unit_test(test_tmux),
    };
    return cmocka_run_group_tests(tests, setup, tmpdir_teardown);
}
