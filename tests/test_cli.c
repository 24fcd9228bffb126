// System-level tests of the fusekit program: train, resume, eval, generate and info as a
// user runs them, and bad input giving a clear message and a non-zero exit.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fusekit/fusekit.h"
#include "test_util.h"



static void test_train_eval_generate(void **s) {
    (void)s;
    char *out, text[300];
    snprintf(text, sizeof text, "%s/text.txt", tmpdir);
    FILE *f = fopen(text, "w");
    for (int i = 0; i < 400; i++) fprintf(f, "line %d: the cat sat on the mat.\n", i % 17);
    fclose(f);
    int rc = run(&out, "%s train --data %s -o %s/m --steps 100 --batch 8 --ctx 32 --d-model 32 --layers 2 --heads 2 "
                 "--lr 1e-2 --eval-every 50 --log-every 10 --save-every 50", FK_CLI, text, tmpdir);
    if (rc != 0) fail_msg("train failed: %s", out);
    assert_non_null(strstr(out, "\"step\":100"));
    assert_non_null(strstr(out, "\"val_bpb\""));
    free(out);
    // metrics.jsonl, the final model, the newest checkpoints
    char p[400];
    snprintf(p, sizeof p, "%s/m/metrics.jsonl", tmpdir);
    assert_true(fk_path_exists(p));
    snprintf(p, sizeof p, "%s/m/checkpoint-100/optimizer.safetensors", tmpdir);
    assert_true(fk_path_exists(p));
    // a fresh run into a folder that holds a run is refused
    rc = run(&out, "%s train --data %s -o %s/m --steps 5", FK_CLI, text, tmpdir);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "already holds a training run"));
    free(out);
    // resume continues to a longer run
    rc = run(&out, "%s train --data %s -o %s/m --resume --steps 120", FK_CLI, text, tmpdir);
    if (rc != 0) fail_msg("resume failed: %s", out);
    assert_non_null(strstr(out, "resuming from"));
    assert_non_null(strstr(out, "\"step\":120"));
    assert_null(strstr(out, "\"step\":100,"));
    free(out);
    rc = run(&out, "%s eval --model %s/m --data %s", FK_CLI, tmpdir, text);
    assert_int_equal(rc, 0);
    char *b = strstr(out, "\"bpb\":");
    assert_non_null(b);
    double bpb = atof(b + 6);
    print_message("  held-out bits per byte after 120 steps: %.3f\n", bpb);
    assert_true(bpb > 0.1 && bpb < 3.0);  // a repetitive text: well below the 8 bits of a uniform byte model
    free(out);
    // greedy generation is deterministic and continues the pattern
    char *g1, *g2;
    assert_int_equal(run(&g1, "%s generate --model %s/m --prompt 'line 3' -n 40 --greedy", FK_CLI, tmpdir), 0);
    assert_int_equal(run(&g2, "%s generate --model %s/m --prompt 'line 3' -n 40 --greedy", FK_CLI, tmpdir), 0);
    char *nl1 = strstr(g1, "generated"), *nl2 = strstr(g2, "generated");
    assert_non_null(nl1);
    assert_int_equal(nl1 - g1, nl2 - g2);
    assert_memory_equal(g1, g2, (size_t)(nl1 - g1));
    assert_true(strncmp(g1, "line 3", 6) == 0);
    free(g2);
    assert_int_equal(run(&out, "%s generate --model %s/m --prompt 'th' -n 20 --temperature 1.0 --top-k 5 --top-p 0.9", FK_CLI, tmpdir), 0);
    free(out);
    // --stop: the text up to the stop string, not the string, and generation ends there
    char *g3;
    assert_int_equal(run(&g3, "%s generate --model %s/m --prompt 'line 3' -n 40 --greedy --stop 'on the' 2>&1", FK_CLI, tmpdir), 0);
    char *cut = strstr(g1, "on the");
    assert_non_null(cut);  // the unstopped text has it
    assert_memory_equal(g3, g1, (size_t)(cut - g1));  // the same text up to it
    assert_non_null(strstr(g3, "stopped at a --stop string"));
    assert_null(strstr(g3, "on the"));
    free(g3);
    // --prompt-file, from a file and from standard input: the same text as --prompt
    char pf[300];
    snprintf(pf, sizeof pf, "%s/prompt.txt", tmpdir);
    f = fopen(pf, "w");
    fputs("line 3", f);
    fclose(f);
    assert_int_equal(run(&g3, "%s generate --model %s/m --prompt-file %s -n 40 --greedy", FK_CLI, tmpdir, pf), 0);
    assert_memory_equal(g3, g1, (size_t)(nl1 - g1));
    free(g3);
    assert_int_equal(run(&g3, "printf 'line 3' | %s generate --model %s/m --prompt-file - -n 40 --greedy", FK_CLI, tmpdir), 0);
    assert_memory_equal(g3, g1, (size_t)(nl1 - g1));
    free(g3);
    char big[300];  // a prompt file over 64 MiB (sparse) is refused before it is read, naming the file
    snprintf(big, sizeof big, "%s/big_prompt.txt", tmpdir);
    f = fopen(big, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(truncate(big, (off_t)65 << 20), 0);
    assert_int_not_equal(run(&g3, "%s generate --model %s/m --prompt-file %s -n 1", FK_CLI, tmpdir, big), 0);
    assert_non_null(strstr(g3, "big_prompt.txt"));
    assert_non_null(strstr(g3, "64 MiB"));
    free(g3);
    unlink(big);
    assert_int_equal(run(&g3, "%s generate --model %s/m --prompt x --prompt-file %s", FK_CLI, tmpdir, pf), 2);
    assert_non_null(strstr(g3, "one of --prompt"));
    free(g3);
    free(g1);
    // the shape from a Hugging Face config.json (Llama with grouped-query attention)
    char cfg[300];
    snprintf(cfg, sizeof cfg, "%s/llama_config.json", tmpdir);
    f = fopen(cfg, "w");
    fputs("{\"model_type\": \"llama\", \"vocab_size\": 256, \"hidden_size\": 32, \"intermediate_size\": 64,"
          " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
          " \"max_position_embeddings\": 32, \"rms_norm_eps\": 1e-6, \"hidden_act\": \"silu\"}", f);
    fclose(f);
    rc = run(&out, "%s train --data %s --config %s -o %s/m2 --steps 3 --seq 16 --batch 2", FK_CLI, text, cfg, tmpdir);
    if (rc != 0) fail_msg("train --config failed: %s", out);
    free(out);
    assert_int_equal(run(&out, "%s info --model %s/m2 --json", FK_CLI, tmpdir), 0);
    assert_non_null(strstr(out, "\"model_type\":\"llama\""));
    free(out);
    assert_int_equal(run(&out, "%s info --model %s/m --json", FK_CLI, tmpdir), 0);
    assert_non_null(strstr(out, "\"model_type\":\"gpt2\""));
    free(out);
}

// --precision on the program: train's default is auto (bf16 exactly where fk_bf16_fast, the same
// library in this process, says oneDNN runs it natively and faster: AMX tiles, AMD), recorded in the checkpoint as what
// it ran; fp32 and bf16 as asked; eval's default stays fp32; a bad value names the choices.
static bool state_has_precision(const char *run) {
    char p[400];
    snprintf(p, sizeof p, "%s/%s/checkpoint-3/trainer_state.json", tmpdir, run);
    size_t n;
    char *st = slurp(p, &n);
    bool has = strstr(st, "\"precision\":\t\"bf16\"") || strstr(st, "\"precision\": \"bf16\"") ||
               strstr(st, "\"precision\":\"bf16\"");
    free(st);
    return has;
}

static void test_precision(void **s) {
    (void)s;
    char *out, text[300];
    snprintf(text, sizeof text, "%s/ptext.txt", tmpdir);
    FILE *f = fopen(text, "w");
    for (int i = 0; i < 200; i++) fprintf(f, "row %d: the dog ran.\n", i % 11);
    fclose(f);
    const char *common = "--steps 3 --save-every 3 --batch 2 --ctx 32 --d-model 32 --layers 1 --heads 2";
    bool fast = fk_bf16_fast();
    int rc = run(&out, "%s train --data %s -o %s/p_auto %s", FK_CLI, text, tmpdir, common);
    if (rc != 0) fail_msg("train failed: %s", out);
    // the run names the path auto took
    assert_non_null(strstr(out, fast ? "matrix products: bf16 (oneDNN, " : "matrix products: fp32 (OpenBLAS) (--precision auto)"));
    free(out);
    assert_int_equal(state_has_precision("p_auto"), fast);
    rc = run(&out, "%s train --data %s -o %s/p_fp32 %s --precision fp32", FK_CLI, text, tmpdir, common);
    if (rc != 0) fail_msg("train --precision fp32 failed: %s", out);
    assert_null(strstr(out, "matrix products"));
    free(out);
    assert_false(state_has_precision("p_fp32"));
    rc = run(&out, "%s train --data %s -o %s/p_bf16 %s --precision bf16", FK_CLI, text, tmpdir, common);
    if (rc != 0) fail_msg("train --precision bf16 failed: %s", out);
    assert_non_null(strstr(out, "matrix products: bf16"));
    free(out);
    assert_true(state_has_precision("p_bf16"));
    rc = run(&out, "%s eval --model %s/p_fp32 --data %s", FK_CLI, tmpdir, text);
    assert_int_equal(rc, 0);
    assert_null(strstr(out, "matrix products"));  // eval: fp32 unless asked
    free(out);
    rc = run(&out, "%s eval --model %s/p_fp32 --data %s --precision auto", FK_CLI, tmpdir, text);
    assert_int_equal(rc, 0);
    assert_int_equal(strstr(out, "matrix products in bf16") != NULL, fast);
    free(out);
    // int8 is for frozen quantized models: eval takes it and says so, training refuses it
    rc = run(&out, "%s eval --model %s/p_fp32 --data %s --precision int8", FK_CLI, tmpdir, text);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "quantized weights multiply 8-bit activations"));
    free(out);
    rc = run(&out, "%s train --data %s -o %s/p_int8 %s --precision int8", FK_CLI, text, tmpdir, common);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "int8"));
    assert_non_null(strstr(out, "fp32|bf16|auto"));
    free(out);
    rc = run(&out, "%s train --data %s -o %s/p_bad %s --precision fp16", FK_CLI, text, tmpdir, common);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "--precision"));
    assert_non_null(strstr(out, "auto"));
    free(out);
}

// eval's progress line: on a terminal (script(1) gives the program one) it shows units done, the
// rate and an ETA, then clears itself; not with --quiet, not when stderr is a pipe. Uses the
// model test_train_eval_generate trained.
static void test_progress(void **s) {
    (void)s;
    char *out, text[300];
    snprintf(text, sizeof text, "%s/text.txt", tmpdir);
    if (system("command -v script > /dev/null 2>&1") != 0) { print_message("  skipped: no script(1) (util-linux)\n"); return; }
    int rc = run(&out, "script -qec '%s eval --model %s/m --data %s --batch 1' /dev/null", FK_CLI, tmpdir, text);
    if (rc != 0) fail_msg("eval on a terminal failed: %s", out);
    assert_non_null(strstr(out, "fusekit eval: "));
    assert_non_null(strstr(out, " windows ("));
    assert_non_null(strstr(out, "tok/s, ETA "));
    assert_non_null(strstr(out, "\"bpb\""));  // the result line as ever
    free(out);
    rc = run(&out, "script -qec '%s eval --model %s/m --data %s --batch 1 --quiet' /dev/null", FK_CLI, tmpdir, text);
    assert_int_equal(rc, 0);
    assert_null(strstr(out, "ETA"));
    free(out);
    rc = run(&out, "%s eval --model %s/m --data %s --batch 1", FK_CLI, tmpdir, text);  // stderr not a terminal
    assert_int_equal(rc, 0);
    assert_null(strstr(out, "ETA"));
    free(out);
    // analyze's and fold's statistics report the same way
    rc = run(&out, "script -qec '%s analyze --model %s/m --data %s --batch 1 -o %s/an' /dev/null", FK_CLI, tmpdir, text, tmpdir);
    if (rc != 0) fail_msg("analyze on a terminal failed: %s", out);
    assert_non_null(strstr(out, "fusekit analyze: "));
    assert_non_null(strstr(out, " windows ("));
    assert_non_null(strstr(out, "\"block_influence\""));
    free(out);
    rc = run(&out, "script -qec '%s analyze --model %s/m --data %s --batch 1 -o %s/an2 --quiet' /dev/null", FK_CLI, tmpdir, text, tmpdir);
    assert_int_equal(rc, 0);
    assert_null(strstr(out, "ETA"));
    free(out);
    rc = run(&out, "script -qec '%s fold --model %s/m --data %s --budget 0.2 --fold-edges -o %s/fo' /dev/null", FK_CLI, tmpdir, text, tmpdir);
    if (rc != 0) fail_msg("fold on a terminal failed: %s", out);
    assert_non_null(strstr(out, "fusekit fold: "));
    assert_non_null(strstr(out, "ETA"));
    assert_non_null(strstr(out, "KL(original || folded)"));
    free(out);
}

static void test_cli_errors(void **s) {
    (void)s;
    char *out;
    // fuse checks every source before the first extraction: a bad second one leaves nothing behind
    assert_int_equal(run(&out, "%s fuse --target %s/m --source %s/m %s/nosource --data %s/text.txt -o %s/fz --steps 2", FK_CLI, tmpdir, tmpdir,
                         tmpdir, tmpdir, tmpdir), 1);
    assert_non_null(strstr(out, "nosource/config.json"));
    assert_null(strstr(out, "store "));
    free(out);
    assert_false(fk_path_exists(tpath("fz")));
    // fuse's extraction takes its own precision, int8 included (training itself refuses int8)
    assert_int_equal(run(&out, "%s fuse --target %s/m --data %s/text.txt -o %s/fz8 --steps 2 --batch 2 --seq 32 --precision int8", FK_CLI,
                         tmpdir, tmpdir, tmpdir), 2);
    assert_non_null(strstr(out, "fp32|bf16|auto"));
    free(out);
    int rc = run(&out, "%s fuse --target %s/m --data %s/text.txt -o %s/fz8 --steps 2 --batch 2 --seq 32 --extract-precision int8", FK_CLI,
                 tmpdir, tmpdir, tmpdir);
    if (rc != 0) fail_msg("fuse --extract-precision int8 failed:\n%s", out);
    free(out);
    assert_true(fk_path_exists(tpath("fz8/model.safetensors")));
    assert_int_equal(run(&out, "%s fuse --target %s/m --data %s/text.txt -o %s/fz9 --extract-precision fp16", FK_CLI, tmpdir, tmpdir, tmpdir), 2);
    assert_non_null(strstr(out, "--extract-precision"));
    free(out);
    assert_int_equal(run(&out, "%s train -o %s/x", FK_CLI, tmpdir), 2);
    assert_non_null(strstr(out, "--data"));
    free(out);
    assert_int_equal(run(&out, "%s eval --model %s/missing --data /dev/null", FK_CLI, tmpdir), 1);
    assert_non_null(strstr(out, "missing/config.json"));
    free(out);
    assert_int_equal(run(&out, "%s train --data %s/nofile.txt -o %s/x", FK_CLI, tmpdir, tmpdir), 1);
    assert_non_null(strstr(out, "nofile.txt"));
    free(out);
    assert_int_equal(run(&out, "%s train --data /dev/null -o %s/x --steps x", FK_CLI, tmpdir), 2);
    assert_non_null(strstr(out, "expects an integer"));
    free(out);
    assert_int_equal(run(&out, "%s frobnicate", FK_CLI), 2);
    free(out);
    // a model whose vocabulary is smaller than the data's ids
    assert_int_equal(run(&out, "%s train --data %s/golden/gpt2/config.json --init %s/golden/gpt2 -o %s/y --steps 2 --seq 8",
                         FK_CLI, FK_TEST_DATA, FK_TEST_DATA, tmpdir), 1);
    assert_non_null(strstr(out, "the tokenizer has 256 tokens but the model's vocabulary only 64"));
    free(out);
}

// A trained tokenizer through the whole chain: train it, tokenize to a shard, train a model
// on the shard, evaluate on text, generate from a text prompt.
static void test_tokenizer_pipeline(void **s) {
    (void)s;
    char *out, text[300];
    snprintf(text, sizeof text, "%s/tok.txt", tmpdir);
    FILE *f = fopen(text, "w");
    const char *animals[] = {"cat", "dog", "bird", "horse"}, *verbs[] = {"sat on", "ran to", "looked at"};
    for (int i = 0; i < 600; i++) fprintf(f, "The %s %s the %s.\n", animals[i % 4], verbs[i % 3], animals[(i / 4) % 4]);
    fclose(f);
    int rc = run(&out, "%s tokenizer train --data %s --vocab 280 -o %s/tok", FK_CLI, text, tmpdir);
    if (rc != 0) fail_msg("tokenizer train failed: %s", out);
    assert_non_null(strstr(out, "\"vocab\":280"));
    free(out);
    rc = run(&out, "%s tokenize --tokenizer %s/tok --data %s --sep-eos -o %s/tok.fktok", FK_CLI, tmpdir, text, tmpdir);
    if (rc != 0) fail_msg("tokenize failed: %s", out);
    assert_non_null(strstr(out, "\"tokens\""));
    free(out);
    rc = run(&out, "%s tokenizer encode --tokenizer %s/tok --text 'The horse ran to the bird.'", FK_CLI, tmpdir);
    assert_int_equal(rc, 0);
    char ids[512];
    snprintf(ids, sizeof ids, "%s", out);
    ids[strcspn(ids, "\n")] = 0;
    free(out);
    assert_true(strlen(ids) > 0);
    rc = run(&out, "%s tokenizer decode --tokenizer %s/tok --ids '%s'", FK_CLI, tmpdir, ids);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "The horse ran to the bird.");
    free(out);
    rc = run(&out, "%s train --data %s/tok.fktok --tokenizer %s/tok -o %s/tm --steps 80 --batch 8 --ctx 32 --d-model 32 --layers 2 "
                 "--heads 2 --lr 1e-2 --eval-every 40", FK_CLI, tmpdir, tmpdir, tmpdir);
    if (rc != 0) fail_msg("train on the shard failed: %s", out);
    free(out);
    char p[400];
    snprintf(p, sizeof p, "%s/tm/tokenizer.json", tmpdir);
    assert_true(fk_path_exists(p));
    snprintf(p, sizeof p, "%s/tm/checkpoint-80/tokenizer.json", tmpdir);
    assert_true(fk_path_exists(p));
    // eval encodes the text with the model's own tokenizer; bits per byte count the file's bytes
    rc = run(&out, "%s eval --model %s/tm --data %s", FK_CLI, tmpdir, text);
    if (rc != 0) fail_msg("eval failed: %s", out);
    const char *b = strstr(out, "\"bytes\":");
    assert_non_null(b);
    assert_true(atoll(b + 8) > 12000 && atoll(b + 8) <= 15894);  // the file has 15,894 bytes
    free(out);
    rc = run(&out, "%s generate --model %s/tm --prompt 'The cat' -n 12 --greedy", FK_CLI, tmpdir);
    if (rc != 0) fail_msg("generate failed: %s", out);
    assert_memory_equal(out, "The cat", 7);
    assert_non_null(strstr(out, " the "));  // the model learnt the pattern and speaks words
    free(out);
    // a shard is not text: tokenize and tokenizer encode refuse it (it was encoded as bytes)
    rc = run(&out, "%s tokenize --tokenizer %s/tok --data %s/tok.fktok -o %s/again.fktok", FK_CLI, tmpdir, tmpdir, tmpdir);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "tok.fktok is a token shard, not text"));
    free(out);
    rc = run(&out, "%s tokenizer encode --tokenizer %s/tok --file %s/tok.fktok", FK_CLI, tmpdir, tmpdir);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "is a token shard, not text"));
    free(out);
    // a shard with no tokenizer trains on its ids, and says the model will have no tokenizer
    rc = run(&out, "%s train --data %s/tok.fktok -o %s/tm3 --steps 2 --batch 2 --ctx 16 --d-model 16 --layers 1 --heads 2 --vocab 280",
             FK_CLI, tmpdir, tmpdir);
    if (rc != 0) fail_msg("train on the shard without a tokenizer failed: %s", out);
    assert_non_null(strstr(out, "no tokenizer was given"));
    free(out);
    snprintf(p, sizeof p, "%s/tm3/tokenizer.json", tmpdir);
    assert_false(fk_path_exists(p));
    // a new model with far more rows than its tokenizer has tokens is refused up front (no verb
    // would load it afterwards): here 2000 rows for the 280 tokens
    rc = run(&out, "%s train --data %s --tokenizer %s/tok -o %s/tm4 --steps 1 --batch 2 --ctx 16 --d-model 16 --layers 1 --heads 2 "
             "--vocab 2000", FK_CLI, text, tmpdir, tmpdir);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "1720 rows"));
    free(out);
    // a shard written with one tokenizer is refused with another
    rc = run(&out, "%s tokenizer train --data %s --vocab 270 -o %s/tok2", FK_CLI, text, tmpdir);
    assert_int_equal(rc, 0);
    free(out);
    rc = run(&out, "%s train --data %s/tok.fktok --tokenizer %s/tok2 -o %s/tm2 --steps 2", FK_CLI, tmpdir, tmpdir, tmpdir);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "written with another tokenizer"));
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_train_eval_generate), cmocka_unit_test(test_progress), cmocka_unit_test(test_cli_errors), cmocka_unit_test(test_precision),
                                       cmocka_unit_test(test_tokenizer_pipeline)};
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
