// fk_generate: greedy generation equals the argmax of a fresh forward over the context at every
// step, through context slides; stop tokens, the callback's stop and max_new end it; a seed
// gives the same sample again.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fusekit/fusekit.h"
#include "fusekit/sample.h"
#include "test_util.h"

typedef struct { int32_t ids[256]; int n, stop_after; } collected;

static bool collect(int32_t id, void *user) {
    collected *c = user;
    c->ids[c->n++] = id;
    return c->n != c->stop_after;
}

static void tiny_model(fk_model *m, int ctx) {
    fk_config c;
    fk_config_gpt2(&c, 64, 32, 2, 4, ctx);
    c.eos_id = -1;
    CHECK(fk_model_init(m, &c));
    fk_model_init_weights(m, 7);
}

// The greedy tokens by a fresh forward each step over the context generate keeps: the newest
// cap/2 tokens once it is full (the new token alone for a context of one).
static void reference(fk_model *m, const int32_t *prompt, int n_prompt, int n_new, int32_t *out) {
    int cap = (int)m->cfg.max_seq, n = 0;
    int32_t win[64];
    float lg[64];
    for (int i = 0; i < n_prompt; i++) win[n++] = prompt[i];
    for (int k = 0; k < n_new; k++) {
        CHECK(fk_model_step(m, win, n, 0, lg));
        int32_t best = 0;
        for (int v = 1; v < 64; v++) if (lg[v] > lg[best]) best = v;
        out[k] = best;
        if (n == cap && cap == 1) { win[0] = best; continue; }
        if (n == cap) { memmove(win, win + n - cap / 2, (size_t)(cap / 2) * sizeof(int32_t)); n = cap / 2; }
        win[n++] = best;
    }
}

static void test_greedy_slides(void **s) {
    (void)s;
    const int caps[] = {1, 2, 5, 8};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        fk_model m;
        tiny_model(&m, caps[i]);
        fk_generate_opts o;
        fk_generate_defaults(&o);
        o.sampler.temperature = 0;
        o.max_new = 20;
        const int32_t prompt[] = {3, 9, 27};
        collected c = {.stop_after = -1};
        fk_generate_stats st;
        CHECK(fk_generate(&m, prompt, 3, &o, collect, &c, &st));
        assert_int_equal(c.n, 20);
        assert_int_equal(st.generated, 20);
        int32_t want[20];
        int np = caps[i] < 3 ? caps[i] : 3;  // the newest tokens of a prompt longer than the context
        reference(&m, prompt + 3 - np, np, 20, want);
        assert_memory_equal(c.ids, want, sizeof want);
        fk_model_free(&m);
    }
}

static void test_stops_and_seed(void **s) {
    (void)s;
    fk_model m;
    tiny_model(&m, 16);
    fk_generate_opts o;
    fk_generate_defaults(&o);
    o.max_new = 30;
    collected a = {.stop_after = -1}, b = {.stop_after = -1}, c = {.stop_after = 4};
    CHECK(fk_generate(&m, NULL, 0, &o, collect, &a, NULL));  // no prompt: starts from token 0
    CHECK(fk_generate(&m, NULL, 0, &o, collect, &b, NULL));
    assert_int_equal(a.n, 30);
    assert_memory_equal(a.ids, b.ids, sizeof a.ids);
    CHECK(fk_generate(&m, NULL, 0, &o, collect, &c, NULL));  // the callback stops it
    assert_int_equal(c.n, 4);
    collected d = {.stop_after = -1};
    o.stop[1] = a.ids[5];  // a stop token ends it after it is passed on
    CHECK(fk_generate(&m, NULL, 0, &o, collect, &d, NULL));
    int first = 0;
    while (a.ids[first] != a.ids[5]) first++;
    assert_int_equal(d.n, first + 1);
    fk_model_free(&m);
}

// The repetition penalty as llama.cpp defines it, worked by hand: each distinct recent id once,
// positive logits divided, negative multiplied; out-of-range ids ignored. Through fk_generate:
// greedy with the penalty equals the reference whose logits are penalised over the last N tokens
// of its window, step for step.
static void test_repeat_penalty(void **s) {
    (void)s;
    float lg[5] = {2.0f, -2.0f, 1.0f, 0.5f, -0.25f};
    const int32_t recent[] = {0, 1, 0, 4, 9, -1};
    fk_repeat_penalty(lg, 5, recent, 6, 2.0f);
    const float want[5] = {1.0f, -4.0f, 1.0f, 0.5f, -0.5f};
    for (int i = 0; i < 5; i++) assert_true(lg[i] == want[i]);
    fk_model m;
    tiny_model(&m, 64);
    const int32_t prompt[3] = {5, 9, 5};
    fk_generate_opts o;
    fk_generate_defaults(&o);
    assert_true(o.repeat_penalty == 1.0f && o.repeat_last_n == 64);
    o.sampler.temperature = 0, o.max_new = 20, o.repeat_penalty = 3.0f, o.repeat_last_n = 4;
    collected c = {.stop_after = -1};
    CHECK(fk_generate(&m, prompt, 3, &o, collect, &c, NULL));
    assert_int_equal(c.n, 20);
    int32_t win[64];
    int n = 0;
    for (int i = 0; i < 3; i++) win[n++] = prompt[i];
    float z[64];
    for (int k = 0; k < 20; k++) {  // the context never fills here (3 + 20 < 64)
        CHECK(fk_model_step(&m, win, n, 0, z));
        fk_repeat_penalty(z, 64, win + (n > 4 ? n - 4 : 0), n > 4 ? 4 : n, 3.0f);
        int32_t best = 0;
        for (int v = 1; v < 64; v++) if (z[v] > z[best]) best = v;
        assert_int_equal(c.ids[k], best);
        win[n++] = best;
    }
    fk_model_free(&m);
}

// A conversation's next turn (fk_generate_opts.reuse): the first call returns its context; a
// second prompt that extends it (context + 5 new tokens) run with reuse = the shared prefix gives
// the same greedy tokens as the same prompt run whole (the reference: a fresh forward each step),
// runs only the new tokens, and returns the longer context; reuse beyond the prompt keeps one
// token to run, with the same tokens again.
static void test_reuse_context(void **s) {
    (void)s;
    fk_model m;
    tiny_model(&m, 64);
    fk_generate_opts o;
    fk_generate_defaults(&o);
    o.sampler.temperature = 0;
    o.max_new = 8;
    int32_t ctx[64], ctx2[64];
    o.context = ctx;
    const int32_t prompt[] = {3, 9, 27, 17};
    collected a = {.stop_after = -1};
    fk_generate_stats st;
    CHECK(fk_generate(&m, prompt, 4, &o, collect, &a, &st));
    assert_int_equal(st.reused, 0);
    assert_int_equal(st.n_context, 4 + 8);  // max_new reached: every token was run (a stop token is not)
    assert_memory_equal(ctx, prompt, sizeof prompt);
    assert_memory_equal(ctx + 4, a.ids, 8 * sizeof(int32_t));
    int32_t p2[32];
    int n2 = 0;
    for (int i = 0; i < st.n_context; i++) p2[n2++] = ctx[i];
    const int32_t more[] = {5, 11, 2, 60, 33};
    for (int i = 0; i < 5; i++) p2[n2++] = more[i];
    collected b = {.stop_after = -1};
    o.reuse = st.n_context;
    o.context = ctx2;
    CHECK(fk_generate(&m, p2, n2, &o, collect, &b, &st));
    assert_int_equal(st.reused, n2 - 5);
    assert_int_equal(st.n_context, n2 + 8);
    int32_t want[8];
    reference(&m, p2, n2, 8, want);
    assert_memory_equal(b.ids, want, sizeof want);
    // reuse of the whole prompt (or more): its last token is run again, for the logits after it
    collected c = {.stop_after = -1};
    o.reuse = 1000;
    o.context = NULL;
    CHECK(fk_generate(&m, p2, n2, &o, collect, &c, &st));
    assert_int_equal(st.reused, n2 - 1);
    assert_memory_equal(c.ids, want, sizeof want);
    fk_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_greedy_slides), cmocka_unit_test(test_stops_and_seed),
                                       cmocka_unit_test(test_repeat_penalty), cmocka_unit_test(test_reuse_context)};
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
