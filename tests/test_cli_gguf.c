// A .gguf file wherever a model folder goes: a small trained Llama-style model (with a trained
// tokenizer) is exported to GGUF (F32), then every verb that reads a model is run on the file
// and on the folder. The folder is the reference: F32 export is lossless (the export itself is
// checked against llama.cpp's convert_hf_to_gguf.py in test_gguf_model), so the numbers must be
// bit-identical — the same weights, the same tokenizer, the same printed figures and stores.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

static char text[300];

// The JSON line's value text for key (up to the next ',' or '}'), for exact comparisons.
static void json_raw(const char *s, const char *key, char *out, size_t n) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = strstr(s, k);
    if (!p) fail_msg("no %s in: %s", key, s);
    p += strlen(k);
    size_t len = strcspn(p, ",}");
    snprintf(out, n, "%.*s", (int)len, p);
}

static void assert_same_field(const char *a, const char *b, const char *key) {
    char va[64], vb[64];
    json_raw(a, key, va, sizeof va);
    json_raw(b, key, vb, sizeof vb);
    if (strcmp(va, vb) != 0) fail_msg("%s: %s (folder) vs %s (gguf)", key, va, vb);
}

// The part of an output before the first line that starts with `stop` (timings follow it).
static size_t until(const char *s, const char *stop) {
    const char *p = strstr(s, stop);
    return p ? (size_t)(p - s) : strlen(s);
}

static int setup(void **s) {
    if (tmpdir_setup(s)) return -1;
    snprintf(text, sizeof text, "%s/text.txt", tmpdir);
    FILE *f = fopen(text, "w");
    if (!f) return -1;
    const char *animals[] = {"cat", "dog", "bird", "horse"}, *verbs[] = {"sat on", "ran to", "looked at"};
    for (int i = 0; i < 500; i++) fprintf(f, "The %s %s the %s.\n", animals[i % 4], verbs[i % 3], animals[(i / 4) % 4]);
    fclose(f);
    char *out;
    int rc = run(&out, "%s tokenizer train --data %s --vocab 300 -o %s/tok", FK_CLI, text, tmpdir);
    if (rc == 0) {
        free(out);
        rc = run(&out, "%s train --data %s --tokenizer %s/tok --arch llama -o %s/m --steps 40 --batch 4 --ctx 32 --d-model 32 --layers 3 "
                 "--heads 4 --kv-heads 2 --lr 1e-2 --eval-every 40", FK_CLI, text, tmpdir, tmpdir);
    }
    if (rc == 0) {
        free(out);
        rc = run(&out, "%s export --model %s/m --gguf %s/m.gguf", FK_CLI, tmpdir, tmpdir);
    }
    if (rc == 0) {
        free(out);
        rc = run(&out, "%s export --model %s/m --gguf %s/notok.gguf --no-tokenizer", FK_CLI, tmpdir, tmpdir);
    }
    if (rc != 0) fprintf(stderr, "setup failed:\n%s\n", out);
    free(out);
    return rc == 0 ? 0 : -1;
}

// The library entry point: the same config, weights (bit for bit) and tokenizer.
static void test_model_load(void **s) {
    (void)s;
    assert_true(fk_model_path_is_gguf(tpath("m.gguf")));
    assert_false(fk_model_path_is_gguf(tpath("m")));
    assert_true(fk_model_path_is_gguf(tpath("missing.gguf")));  // reported as a missing file
    assert_false(fk_model_path_is_gguf(text));
    fk_model a, b;
    fk_tokenizer *ta, *tb;
    CHECK(fk_model_load(tpath("m"), 0, &a, &ta));
    CHECK(fk_model_load(tpath("m.gguf"), FK_LOAD_FROZEN, &b, &tb));
    assert_non_null(ta);
    assert_non_null(tb);
    char da[512], db[512];
    fk_config_describe(&a.cfg, da, sizeof da);
    fk_config_describe(&b.cfg, db, sizeof db);
    assert_string_equal(da, db);
    assert_int_equal(a.n_floats, b.n_floats);
    assert_memory_equal(a.w, b.w, (size_t)a.n_floats * sizeof(float));
    assert_same_pieces(ta, tb);
    assert_int_equal(fk_tok_bos(ta), fk_tok_bos(tb));
    assert_int_equal(fk_tok_eos(ta), fk_tok_eos(tb));
    int32_t V = fk_tok_vocab_size(ta);
    fk_tok_free(ta);
    fk_tok_free(tb);
    // the tokenizer alone
    CHECK(fk_model_load_tokenizer(tpath("m.gguf"), &tb));
    assert_non_null(tb);
    assert_int_equal(fk_tok_vocab_size(tb), V);
    fk_tok_free(tb);
    fk_model_free(&a);
    fk_model_free(&b);
    // a model without a tokenizer: none is made up
    fk_model c;
    CHECK(fk_model_load(tpath("notok.gguf"), 0, &c, &ta));
    assert_null(ta);
    fk_model_free(&c);
}

// eval, generate, extract, info, --kl-to and --ensemble on the file give the folder's figures.
static void test_verbs_same_numbers(void **s) {
    (void)s;
    char *a, *b;
    assert_int_equal(run(&a, "%s eval --model %s/m --data %s --seq 32", FK_CLI, tmpdir, text), 0);
    assert_int_equal(run(&b, "%s eval --model %s/m.gguf --data %s --seq 32", FK_CLI, tmpdir, text), 0);
    const char *keys[] = {"tokens", "bytes", "loss", "ppl", "bpb"};
    for (int i = 0; i < 5; i++) assert_same_field(a, b, keys[i]);
    print_message("  eval: folder and .gguf both bpb %.6f\n", json_num(b, "bpb"));
    free(a); free(b);
    // llama.cpp's perplexity protocol through the GGUF's own tokenizer
    assert_int_equal(run(&a, "%s eval --model %s/m --data %s --seq 32 --protocol llama-perplexity", FK_CLI, tmpdir, text), 0);
    assert_int_equal(run(&b, "%s eval --model %s/m.gguf --data %s --seq 32 --protocol llama-perplexity", FK_CLI, tmpdir, text), 0);
    assert_same_field(a, b, "tokens");
    assert_same_field(a, b, "loss");
    free(a); free(b);
    // greedy generation, as text and as ids
    assert_int_equal(run(&a, "%s generate --model %s/m --prompt 'The dog' -n 24 --greedy", FK_CLI, tmpdir), 0);
    assert_int_equal(run(&b, "%s generate --model %s/m.gguf --prompt 'The dog' -n 24 --greedy", FK_CLI, tmpdir), 0);
    assert_int_equal(until(a, "generated"), until(b, "generated"));
    assert_memory_equal(a, b, until(a, "generated"));
    assert_memory_equal(b, "The dog", 7);
    free(a); free(b);
    assert_int_equal(run(&a, "%s generate --model %s/m --prompt-ids '5 9 17' -n 16 --temperature 0.9 --seed 3 --ids", FK_CLI, tmpdir), 0);
    assert_int_equal(run(&b, "%s generate --model %s/m.gguf --prompt-ids '5 9 17' -n 16 --temperature 0.9 --seed 3 --ids", FK_CLI, tmpdir), 0);
    assert_memory_equal(a, b, until(a, "generated"));
    free(a); free(b);
    // extraction: byte-identical stores, the tokenizer beside each
    RUN_OK("%s extract --model %s/m --data %s -k 6 --seq 32 -o %s/a.fkd", FK_CLI, tmpdir, text, tmpdir);
    RUN_OK("%s extract --model %s/m.gguf --data %s -k 6 --seq 32 -o %s/b.fkd", FK_CLI, tmpdir, text, tmpdir);
    size_t na, nb;
    char *sa = slurp(tpath("a.fkd"), &na), *sb = slurp(tpath("b.fkd"), &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(sa, sb, na);
    free(sa); free(sb);
    assert_true(fk_path_exists(tpath("b.fkd.tokenizer/tokenizer.json")));
    // info
    assert_int_equal(run(&a, "%s info --model %s/m --json", FK_CLI, tmpdir), 0);
    assert_int_equal(run(&b, "%s info --model %s/m.gguf --json", FK_CLI, tmpdir), 0);
    assert_string_equal(a, b);
    free(a); free(b);
    // --kl-to the file: the same model, KL 0; an ensemble of the folder and the file
    assert_int_equal(run(&a, "%s eval --model %s/m --kl-to %s/m.gguf --data %s --seq 32", FK_CLI, tmpdir, tmpdir, text), 0);
    assert_true(json_num(a, "kl") == 0.0);
    free(a);
    assert_int_equal(run(&a, "%s eval --model %s/m --ensemble %s/m.gguf --data %s --seq 32", FK_CLI, tmpdir, tmpdir, text), 0);
    assert_int_equal(run(&b, "%s eval --model %s/m.gguf --ensemble %s/m --data %s --seq 32", FK_CLI, tmpdir, tmpdir, text), 0);
    assert_same_field(a, b, "bpb");
    free(a); free(b);
}

// fuse with a GGUF target and GGUF sources; train --init, merge, prune, analyze, fold and heal
// read the file too.
static void test_fuse_and_friends(void **s) {
    (void)s;
    RUN_OK("%s train --data %s --tokenizer %s/tok --arch llama -o %s/src --steps 10 --batch 4 --ctx 32 --d-model 32 --layers 1 "
           "--heads 2 --lr 1e-2 --seed 7 --eval-every 10", FK_CLI, text, tmpdir, tmpdir);
    RUN_OK("%s export --model %s/src --gguf %s/src.gguf", FK_CLI, tmpdir, tmpdir);
    // a SentencePiece-style source: from GGUF metadata its tokenizer merges by score, from the
    // tokenizer.json kept beside its store by rank (another fingerprint, the same ids)
    RUN_OK("%s tokenizer train --kind spm --data %s --vocab 300 -o %s/spm", FK_CLI, text, tmpdir);
    RUN_OK("%s train --data %s --tokenizer %s/spm --arch llama -o %s/spmsrc --steps 10 --batch 4 --ctx 32 --d-model 32 --layers 1 "
           "--heads 2 --lr 1e-2 --seed 9 --eval-every 10", FK_CLI, text, tmpdir, tmpdir);
    RUN_OK("%s export --model %s/spmsrc --gguf %s/spmsrc.gguf", FK_CLI, tmpdir, tmpdir);
    char *out;
    int rc = run(&out, "%s fuse --target %s/m.gguf --source %s/src.gguf %s/spmsrc.gguf --data %s -o %s/fz -k 4 --steps 4 --batch 2 --seq 32 "
                 "--eval-every 4", FK_CLI, tmpdir, tmpdir, tmpdir, text, tmpdir);
    if (rc != 0) fail_msg("fuse with GGUF files failed:\n%s", out);
    assert_non_null(strstr(out, "\"teacher_shares\""));
    free(out);
    assert_true(fk_path_exists(tpath("fz/model.safetensors")));
    assert_true(fk_path_exists(tpath("fz/tokenizer.json")));  // the GGUF's tokenizer, saved with the fused model
    // stores are named after the file without ".gguf"
    fk_model m;
    CHECK(fk_model_load(tpath("m.gguf"), 0, &m, NULL));
    char store[128];
    snprintf(store, sizeof store, "fz/stores/m-%016llx.fkd", (unsigned long long)fk_model_fingerprint(&m));
    fk_model_free(&m);
    assert_true(fk_path_exists(tpath(store)));
    // the same fusion from folders gives the same model (the same teachers, the same target)
    rc = run(&out, "%s fuse --target %s/m --source %s/src %s/spmsrc --data %s -o %s/fz2 -k 4 --steps 4 --batch 2 --seq 32 --eval-every 4",
             FK_CLI, tmpdir, tmpdir, tmpdir, text, tmpdir);
    if (rc != 0) fail_msg("fuse with folders failed:\n%s", out);
    free(out);
    fk_model f1, f2;
    CHECK(fk_model_load(tpath("fz"), 0, &f1, NULL));
    CHECK(fk_model_load(tpath("fz2"), 0, &f2, NULL));
    assert_int_equal(f1.n_floats, f2.n_floats);
    assert_memory_equal(f1.w, f2.w, (size_t)f1.n_floats * sizeof(float));
    fk_model_free(&f1);
    fk_model_free(&f2);
    // train --init FILE.gguf takes the file's tokenizer
    RUN_OK("%s train --init %s/m.gguf --data %s -o %s/ti --steps 2 --batch 2 --seq 32 --eval-every 2", FK_CLI, tmpdir, text, tmpdir);
    assert_true(fk_path_exists(tpath("ti/tokenizer.json")));
    // merge: the file and the folder of one model average to that model
    RUN_OK("%s merge --method linear -o %s/mg --model %s/m.gguf --model %s/m", FK_CLI, tmpdir, tmpdir, tmpdir);
    assert_false(fk_path_exists(tpath("mg.gguf-inputs")));
    fk_model a, b;
    CHECK(fk_model_load(tpath("m"), 0, &a, NULL));
    CHECK(fk_model_load(tpath("mg"), 0, &b, NULL));
    assert_memory_equal(a.w, b.w, (size_t)a.n_floats * sizeof(float));
    fk_model_free(&a);
    fk_model_free(&b);
    // prune, analyze, fold (with healing from the file as the teacher)
    RUN_OK("%s prune --model %s/m.gguf --data %s --method magnitude --budget 0.25 --seq 32 -o %s/pr", FK_CLI, tmpdir, text, tmpdir);
    RUN_OK("%s analyze --model %s/m.gguf --data %s --seq 32 -o %s/an", FK_CLI, tmpdir, text, tmpdir);
    RUN_OK("%s fold --model %s/m.gguf --data %s --budget 0.2 --fold-edges --seq 32 -o %s/fo --heal-steps 2 -- --batch 2 --seq 32", FK_CLI, tmpdir,
           text, tmpdir);
    assert_true(fk_path_exists(tpath("fo/model.safetensors")));
    RUN_OK("%s heal --teacher %s/m.gguf --model %s/pr --data %s -o %s/he --steps 2 --batch 2 --seq 32", FK_CLI, tmpdir, tmpdir, text, tmpdir);
    // export reads a GGUF too (GGUF -> GGUF)
    RUN_OK("%s export --model %s/m.gguf --gguf %s/again.gguf", FK_CLI, tmpdir, tmpdir);
    CHECK(fk_model_load(tpath("again.gguf"), 0, &a, NULL));
    CHECK(fk_model_load(tpath("m"), 0, &b, NULL));
    assert_memory_equal(a.w, b.w, (size_t)a.n_floats * sizeof(float));
    fk_model_free(&a);
    fk_model_free(&b);
}

// Bad paths: the message names the file and what was expected.
static void test_errors(void **s) {
    (void)s;
    RUN_FAILS(1, "missing.gguf", "%s eval --model %s/missing.gguf --data %s", FK_CLI, tmpdir, text);
    RUN_FAILS(1, "is a file but not a GGUF file", "%s eval --model %s --data %s", FK_CLI, text, text);
    RUN_FAILS(1, "missing/config.json", "%s generate --model %s/missing -n 2", FK_CLI, tmpdir);
    // a truncated file
    size_t n;
    char *g = slurp(tpath("m.gguf"), &n);
    spit(tpath("cut.gguf"), g, n / 2);
    free(g);
    RUN_FAILS(1, "cut.gguf", "%s eval --model %s/cut.gguf --data %s", FK_CLI, tmpdir, text);
    RUN_FAILS(1, "cut.gguf", "%s fuse --target %s/m --source %s/cut.gguf --data %s -o %s/fz3 --steps 1", FK_CLI, tmpdir, tmpdir, text, tmpdir);
    // a file without tokenizer keys cannot be a fusion source
    RUN_FAILS(1, "no tokenizer", "%s extract --model %s/notok.gguf --data %s -o %s/x.fkd", FK_CLI, tmpdir, text, tmpdir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_model_load), cmocka_unit_test(test_verbs_same_numbers),
                                       cmocka_unit_test(test_fuse_and_friends), cmocka_unit_test(test_errors)};
    return cmocka_run_group_tests(tests, setup, tmpdir_teardown);
}
