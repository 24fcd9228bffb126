// Fault tests of the fusekit program (ctest -L faults): kill -9 at random points of train and
// extract and during checkpoint writing, then resume -> the same final model / store byte for
// byte as an uninterrupted run; SIGINT and SIGTERM -> exit 130 / 143 with a complete checkpoint
// that resumes exactly; a full disk (RLIMIT_FSIZE) -> a clear error, no corrupt file under a
// final name, inputs untouched. Kill points are drawn with a seeded RNG from the length of an
// uninterrupted run; the assertions hold wherever a kill lands.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

#define STEPS "160"
#define SAVE_EVERY 20

static double t_train, t_extract;  // seconds an uninterrupted run takes (to place kills)
static int kills_tried, kills_identical;
// fixed paths (tpath's buffers are reused after eight calls)
static char text_path[512], ref_dir[512], ref_fkd[512], log_path[512];

// ------------------------------------------------------------------ running the program

typedef struct {
    const char *kill_at;   // FK_TEST_KILL_AT, or NULL
    long fsize;            // RLIMIT_FSIZE in bytes, 0: none
} spawn_opts;

// Starts FK_CLI with the arguments (NULL-terminated), stdout and stderr to <tmpdir>/log.txt.
static pid_t spawn(const spawn_opts *so, char *const *args) {
    char *argv[64];
    int n = 0;
    argv[n++] = (char *)FK_CLI;
    for (int i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
    argv[n] = NULL;
    unlink(log_path);  // the last run's log must not be read for this one's
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); close(fd); }
        if (so && so->kill_at) setenv("FK_TEST_KILL_AT", so->kill_at, 1);
        else unsetenv("FK_TEST_KILL_AT");
        if (so && so->fsize > 0) {
            signal(SIGXFSZ, SIG_IGN);  // a write past the limit fails with EFBIG instead
            struct rlimit rl = {(rlim_t)so->fsize, (rlim_t)so->fsize};
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        execv(FK_CLI, argv);
        _exit(127);
    }
    return p;
}

// Waits for the child: its exit code, or -signal when a signal ended it.
static int reap(pid_t p) {
    int status;
    while (waitpid(p, &status, 0) < 0) {}
    return WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? -WTERMSIG(status) : -1000;
}

static int run_args(const spawn_opts *so, char *const *args) { return reap(spawn(so, args)); }

static char *log_text(void) {
    char *t = NULL;
    size_t n;
    if (fk_read_file(log_path, &t, &n) != FK_OK) return strdup("");
    return t;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {}
}

// Waits (polling) until the log shows a metrics line: training has started. No time limit:
// ctest's own timeout is the limit.
static void wait_for_training(void) {
    for (;;) {
        char *t = log_text();
        bool started = strstr(t, "{\"step\":") != NULL;
        free(t);
        if (started) return;
        sleep_s(0.005);
    }
}

// ------------------------------------------------------------------ fixtures

static void train_args(char **a, const char *out, bool resume) {
    int n = 0;
    static char save[16];
    snprintf(save, sizeof save, "%d", SAVE_EVERY);
    const char *fixed[] = {"train", "--data", text_path, "--steps", STEPS, "--d-model", "32", "--layers", "2", "--heads", "2",
                           "--ctx", "64", "--batch", "4", "--threads", "1", "--eval-every", "0", "--log-every", "10",
                           "--save-every", save, "--keep", "2"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) a[n++] = (char *)fixed[i];
    a[n++] = "-o";
    a[n++] = (char *)out;
    if (resume) a[n++] = "--resume";
    a[n] = NULL;
}

// One training command, resuming when the folder holds a complete checkpoint (as a user would
// after reading "run the same command with --resume").
static pid_t start_train(const spawn_opts *so, const char *out) {
    char *a[48], *ck = NULL;
    bool resume = fk_checkpoint_latest(out, &ck) == FK_OK;
    free(ck);
    train_args(a, out, resume);
    return spawn(so, a);
}

static void extract_args(char **a, const char *model, const char *store) {
    int n = 0;
    const char *fixed[] = {"extract", "--model", model, "--data", text_path, "--seq", "32", "-k", "8", "--threads", "1", "-o", store};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) a[n++] = (char *)fixed[i];
    a[n] = NULL;
}

static bool same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x, *y;
    if (fk_read_file(a, &x, &na) != FK_OK) return false;
    if (fk_read_file(b, &y, &nb) != FK_OK) { free(x); return false; }
    bool same = na == nb && memcmp(x, y, na) == 0;
    free(x); free(y);
    return same;
}

// Every checkpoint-<step> under its final name is complete (the four files of a checkpoint,
// trainer_state.json among them); returns how many there are.
static int assert_checkpoints_complete(const char *out) {
    DIR *d = opendir(out);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long s;
        char tail;
        if (sscanf(e->d_name, "checkpoint-%lld%c", &s, &tail) != 1) continue;
        const char *files[] = {"trainer_state.json", "optimizer.safetensors", "model.safetensors", "config.json"};
        for (int i = 0; i < 4; i++) {
            char p[700];
            snprintf(p, sizeof p, "%s/%s/%s", out, e->d_name, files[i]);
            if (!fk_path_exists(p)) fail_msg("%s/%s is under its final name but has no %s", out, e->d_name, files[i]);
        }
        n++;
    }
    closedir(d);
    return n;
}

// No temporaries (checkpoint-*.tmp / .old, *.tmp.<pid>) left in a folder after a complete run.
static void assert_no_temporaries(const char *out) {
    DIR *d = opendir(out);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp") || strstr(e->d_name, ".old")) fail_msg("%s/%s: a temporary left behind", out, e->d_name);
    closedir(d);
}

static int group_setup(void **s) {
    if (tmpdir_setup(s) != 0) return -1;
    snprintf(text_path, sizeof text_path, "%s/text.txt", tmpdir);
    snprintf(ref_dir, sizeof ref_dir, "%s/ref", tmpdir);
    snprintf(ref_fkd, sizeof ref_fkd, "%s/ref.fkd", tmpdir);
    snprintf(log_path, sizeof log_path, "%s/log.txt", tmpdir);
    // ~90 kB of words drawn with a fixed seed
    static const char *words[] = {"the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "and", "cat", "sat", "on", "mat", "\n"};
    fk_rng r;
    fk_rng_seed(&r, 42);
    FILE *f = fopen(text_path, "w");
    if (!f) return -1;
    for (int i = 0; i < 20000; i++) fprintf(f, "%s ", words[fk_rng_below(&r, sizeof words / sizeof words[0])]);
    fclose(f);
    // the uninterrupted references
    char *a[48];
    train_args(a, ref_dir, false);
    double t0 = fk_time_s();
    if (run_args(NULL, a) != 0) return -1;
    t_train = fk_time_s() - t0;
    extract_args(a, ref_dir, ref_fkd);
    t0 = fk_time_s();
    if (run_args(NULL, a) != 0) return -1;
    t_extract = fk_time_s() - t0;
    return 0;
}

static int group_teardown(void **s) {
    print_message("  fault figures: %d kill points tried, %d resumed bit-identical\n", kills_tried, kills_identical);
    return tmpdir_teardown(s);
}

static void rm_rf(const char *p) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    assert_int_equal(system(cmd), 0);
}

// ------------------------------------------------------------------ tests

// kill -9 at random times (two kills per run, each into the run the last one left), then the
// run resumed to its end: the final model equals the uninterrupted run's byte for byte.
static void test_train_kill9_random(void **s) {
    (void)s;
    fk_rng r;
    fk_rng_seed(&r, 20261203);
    char ref[600], fin[600];
    snprintf(ref, sizeof ref, "%.500s/model.safetensors", ref_dir);
    for (int trial = 0; trial < 4; trial++) {
        char name[32];
        snprintf(name, sizeof name, "kill%d", trial);
        char out[512];
        snprintf(out, sizeof out, "%s", tpath(name));
        char outc[600];
        snprintf(outc, sizeof outc, "%s", out);
        int killed = 0;
        for (int k = 0; k < 2; k++) {
            double at = t_train * (0.05 + 0.6 * (double)fk_rng_below(&r, 1000) / 1000.0);
            pid_t p = start_train(NULL, outc);
            sleep_s(at);
            kill(p, SIGKILL);
            int rc = reap(p);
            killed += rc == -SIGKILL;
            print_message("  trial %d: kill -9 at %.3f s (%s)\n", trial, at, rc == -SIGKILL ? "killed" : "it had finished");
            assert_true(rc == -SIGKILL || rc == 0);
            assert_checkpoints_complete(outc);
        }
        pid_t p = start_train(NULL, outc);
        int rc = reap(p);
        if (rc != 0) { char *t = log_text(); fail_msg("resume failed (%d):\n%s", rc, t); }
        snprintf(fin, sizeof fin, "%.500s/model.safetensors", outc);
        bool same = same_file(ref, fin);
        kills_tried += killed;
        kills_identical += same ? killed : 0;
        assert_true(same);
        assert_no_temporaries(outc);
        // metrics.jsonl holds each logged step once
        char mp[700], *m;
        snprintf(mp, sizeof mp, "%s/metrics.jsonl", outc);
        size_t n;
        m = slurp(mp, &n);
        int count[400] = {0};
        for (char *q = m; (q = strstr(q, "{\"step\":")); q++) {
            int st = atoi(q + 8);
            assert_true(st >= 1 && st <= atoi(STEPS));
            if (++count[st] > 1) fail_msg("%s: step %d appears twice", mp, st);
        }
        free(m);
        rm_rf(outc);
    }
}

// A kill during checkpoint writing (the test hook FK_TEST_KILL_AT=checkpoint-write:<step>):
// the half-written checkpoint is not under its final name, the resume takes the one before,
// cleans the temporary away and ends with the same bytes.
static void test_train_kill_during_checkpoint(void **s) {
    (void)s;
    char out[512];
    snprintf(out, sizeof out, "%s", tpath("ckkill"));
    char at[64];
    snprintf(at, sizeof at, "checkpoint-write:%d", 3 * SAVE_EVERY);
    spawn_opts so = {at, 0};
    int rc = reap(start_train(&so, out));
    kills_tried++;
    assert_int_equal(rc, -SIGKILL);
    char p[700];
    snprintf(p, sizeof p, "%s/checkpoint-%d", out, 3 * SAVE_EVERY);
    assert_false(fk_path_exists(p));  // not under its final name
    snprintf(p, sizeof p, "%s/checkpoint-%d.tmp/model.safetensors", out, 3 * SAVE_EVERY);
    assert_true(fk_path_exists(p));   // half written, under the temporary name
    assert_int_equal(assert_checkpoints_complete(out), 2);
    char *ck = NULL;
    CHECK(fk_checkpoint_latest(out, &ck));
    snprintf(p, sizeof p, "%s/checkpoint-%d", out, 2 * SAVE_EVERY);
    assert_string_equal(ck, p);
    free(ck);
    // what else a kill can leave: a file of an atomic write, a checkpoint being pruned
    snprintf(p, sizeof p, "%s/model.safetensors.tmp.12345", out);
    spit(p, "x", 1);
    snprintf(p, sizeof p, "%s/checkpoint-%d.del", out, SAVE_EVERY);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/checkpoint-%d.del/config.json", out, SAVE_EVERY);
    spit(p, "{}", 2);
    rc = reap(start_train(NULL, out));
    if (rc != 0) { char *t = log_text(); fail_msg("resume failed (%d):\n%s", rc, t); }
    char ref[600], fin[600];
    snprintf(ref, sizeof ref, "%.500s/model.safetensors", ref_dir);
    snprintf(fin, sizeof fin, "%s/model.safetensors", out);
    bool same = same_file(ref, fin);
    kills_identical += same;
    assert_true(same);
    assert_no_temporaries(out);
}

// SIGINT (then SIGTERM) mid-run: the step in progress is finished and saved, the exit code is
// 130 (143), the message says where and how to resume; the resume ends with the same bytes.
static void signal_resume(int sig, int want_rc, const char *name) {
    char out[512];
    snprintf(out, sizeof out, "%s", tpath(name));
    pid_t p = start_train(NULL, out);
    wait_for_training();
    kill(p, sig);
    int rc = reap(p);
    kills_tried++;
    char *t = log_text();
    if (rc != want_rc) fail_msg("exit %d after signal %d (want %d):\n%s", rc, sig, want_rc, t);
    const char *m = strstr(t, "interrupted at step ");
    if (!m) fail_msg("no 'interrupted at step' message:\n%s", t);
    int step = atoi(m + 20);
    char p2[700];
    snprintf(p2, sizeof p2, "checkpoint %s/checkpoint-%d", out, step);
    assert_non_null(strstr(t, p2));
    assert_non_null(strstr(t, "--resume"));
    free(t);
    snprintf(p2, sizeof p2, "%s/checkpoint-%d/trainer_state.json", out, step);
    assert_true(fk_path_exists(p2));
    snprintf(p2, sizeof p2, "%s/model.safetensors", out);
    assert_false(fk_path_exists(p2));  // no final model from a stopped run
    rc = reap(start_train(NULL, out));
    if (rc != 0) { char *t2 = log_text(); fail_msg("resume failed (%d):\n%s", rc, t2); }
    char ref[600];
    snprintf(ref, sizeof ref, "%.500s/model.safetensors", ref_dir);
    bool same = same_file(ref, p2);
    kills_identical += same;
    assert_true(same);
    assert_no_temporaries(out);
}

static void test_train_sigint(void **s) { (void)s; signal_resume(SIGINT, 130, "sigint"); }
static void test_train_sigterm(void **s) { (void)s; signal_resume(SIGTERM, 143, "sigterm"); }

// A second Ctrl-C exits at once (130); whatever it left is complete or absent, and resumes.
static void test_train_double_sigint(void **s) {
    (void)s;
    char out[512];
    snprintf(out, sizeof out, "%s", tpath("sigint2"));
    pid_t p = start_train(NULL, out);
    wait_for_training();
    kill(p, SIGINT);
    kill(p, SIGINT);
    int rc = reap(p);
    kills_tried++;
    assert_int_equal(rc, 130);
    assert_checkpoints_complete(out);
    rc = reap(start_train(NULL, out));
    if (rc != 0) { char *t = log_text(); fail_msg("resume failed (%d):\n%s", rc, t); }
    char ref[600], fin[600];
    snprintf(ref, sizeof ref, "%.500s/model.safetensors", ref_dir);
    snprintf(fin, sizeof fin, "%s/model.safetensors", out);
    bool same = same_file(ref, fin);
    kills_identical += same;
    assert_true(same);
}

// heal (the training phase of fuse, heal and fold --rounds): SIGINT mid-training -> 130 and a
// hint to run the same command again, which resumes (heal adds --resume itself) to the bytes
// of an uninterrupted heal.
static void heal_args(char **a, const char *out) {
    int n = 0;
    const char *fixed[] = {"heal", "--teacher", ref_dir, "--model", ref_dir, "--data", text_path, "--store-dir", tmpdir, "--steps", "100",
                           "--threads", "1", "--eval-every", "0", "--log-every", "10", "-o", out};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) a[n++] = (char *)fixed[i];
    a[n] = NULL;
}

static void test_heal_sigint(void **s) {
    (void)s;
    char *a[32], ref[512], out[512];
    snprintf(ref, sizeof ref, "%s", tpath("heal_ref"));
    snprintf(out, sizeof out, "%s", tpath("heal_int"));
    heal_args(a, ref);
    assert_int_equal(run_args(NULL, a), 0);
    heal_args(a, out);
    pid_t p = spawn(NULL, a);
    wait_for_training();
    kill(p, SIGINT);
    int rc = reap(p);
    kills_tried++;
    char *t = log_text();
    if (rc != 130) fail_msg("heal: exit %d after SIGINT (want 130):\n%s", rc, t);
    assert_non_null(strstr(t, "run the same command again to resume"));
    free(t);
    rc = run_args(NULL, a);
    if (rc != 0) { t = log_text(); fail_msg("heal resume failed (%d):\n%s", rc, t); }
    char x[700], y[700];
    snprintf(x, sizeof x, "%.500s/model.safetensors", ref);
    snprintf(y, sizeof y, "%.500s/model.safetensors", out);
    bool same = same_file(x, y);
    kills_identical += same;
    assert_true(same);
}

// The library's stop flag (no signal involved): set from the step callback after step 2, fk_train
// returns FK_OK after step 3 with checkpoint-3 written and no final model; the event says
// stopped; resumed from the checkpoint, the run ends with an uninterrupted run's weights.
typedef struct { volatile sig_atomic_t *flag; int64_t at; bool saw_stop; } stop_ctx;
static void stop_cb(const fk_train_event *ev, void *user) {
    stop_ctx *c = user;
    if (ev->step == c->at) *c->flag = 1;
    if (ev->stopped) c->saw_stop = ev->checkpoint != NULL;
}

static void test_library_stop_flag(void **s) {
    (void)s;
    fk_token_data d;
    random_tokens(&d, 3000, 64, 5);
    fk_config c;
    fk_config_llama(&c, 64, 16, 2, 2, 1, 32, 32);
    fk_train_opts o;
    fk_train_defaults(&o);
    o.steps = 8; o.batch = 2; o.seq = 16; o.eval_every = 0; o.eval_tokens = 64;
    o.optim.lr = 1e-3f; o.optim.warmup = 2; o.optim.total_steps = 8;
    fk_model a, b;
    fk_adamw oa, ob;
    CHECK(fk_model_init(&a, &c)); fk_model_init_weights(&a, 3); CHECK(fk_adamw_init(&oa, &a, &o.optim));
    CHECK(fk_train(&a, &oa, &d, NULL, &o, tpath("lib_a"), NULL, NULL));
    CHECK(fk_model_init(&b, &c)); fk_model_init_weights(&b, 3); CHECK(fk_adamw_init(&ob, &b, &o.optim));
    volatile sig_atomic_t flag = 0;
    stop_ctx sc = {&flag, 2, false};  // set after step 2: step 3 is the one in progress
    fk_train_opts os = o;
    os.stop = &flag;
    CHECK(fk_train(&b, &ob, &d, NULL, &os, tpath("lib_b"), stop_cb, &sc));
    assert_int_equal(ob.t, 3);
    assert_true(sc.saw_stop);
    assert_true(fk_path_exists(tpath("lib_b/checkpoint-3/trainer_state.json")));
    assert_false(fk_path_exists(tpath("lib_b/model.safetensors")));
    fk_model_free(&b);
    fk_adamw_free(&ob);
    fk_train_opts ro;
    fk_train_defaults(&ro);
    CHECK(fk_checkpoint_load(tpath("lib_b/checkpoint-3"), &b, &ob, &ro));
    CHECK(fk_train(&b, &ob, &d, NULL, &ro, tpath("lib_b"), NULL, NULL));
    assert_int_equal(ob.t, 8);
    assert_memory_equal(a.w, b.w, (size_t)a.n_floats * sizeof(float));
    fk_model_free(&a); fk_model_free(&b);
    fk_adamw_free(&oa); fk_adamw_free(&ob);
    fk_data_free(&d);
}

// kill -9 of extract at random times, then the same command: the same store byte for byte.
// SIGTERM: exit 143 with the .partial kept, and the same command resumes it.
static void test_extract_kill9_and_sigterm(void **s) {
    (void)s;
    fk_rng r;
    fk_rng_seed(&r, 7);
    char *a[32], partial[700];
    char store[512];
    snprintf(store, sizeof store, "%s", tpath("killed.fkd"));
    snprintf(partial, sizeof partial, "%s.partial", store);
    extract_args(a, ref_dir, store);
    int killed = 0;
    for (int k = 0; k < 3; k++) {
        double at = t_extract * (0.05 + 0.3 * (double)fk_rng_below(&r, 1000) / 1000.0);
        pid_t p = spawn(NULL, a);
        sleep_s(at);
        kill(p, SIGKILL);
        int rc = reap(p);
        killed += rc == -SIGKILL;
        print_message("  extract: kill -9 at %.3f s (%s)\n", at, rc == -SIGKILL ? "killed" : "it had finished");
        if (rc == -SIGKILL) assert_false(fk_path_exists(store));  // only the .partial
    }
    int rc = run_args(NULL, a);
    assert_int_equal(rc, 0);
    assert_false(fk_path_exists(partial));
    bool same = same_file(ref_fkd, store);
    kills_tried += killed;
    kills_identical += same ? killed : 0;
    assert_true(same);
    // SIGTERM once the extraction runs: exit 143, the .partial kept; the same command resumes
    char store2[512];
    snprintf(store2, sizeof store2, "%s", tpath("term.fkd"));
    extract_args(a, ref_dir, store2);
    pid_t p = spawn(NULL, a);
    char part2[700];
    snprintf(part2, sizeof part2, "%s.partial", store2);
    while (!fk_path_exists(part2)) sleep_s(0.002);
    sleep_s(t_extract * 0.2);
    kill(p, SIGTERM);
    rc = reap(p);
    kills_tried++;
    if (rc == 143) {
        assert_true(fk_path_exists(part2));
        assert_false(fk_path_exists(store2));
    } else {
        assert_int_equal(rc, 0);  // it had finished
    }
    assert_int_equal(run_args(NULL, a), 0);
    same = same_file(ref_fkd, store2);
    kills_identical += same;
    assert_true(same);
}

// A full disk (RLIMIT_FSIZE below the model's size): train and extract fail with a clear error;
// nothing corrupt lies under a final name; the inputs are unchanged.
static void test_full_disk(void **s) {
    (void)s;
    size_t n0;
    char *before = slurp(text_path, &n0);
    char ref_cfg[600];
    snprintf(ref_cfg, sizeof ref_cfg, "%s/model.safetensors", ref_dir);
    size_t nm;
    char *ref_model = slurp(ref_cfg, &nm);
    spawn_opts so = {NULL, 64 * 1024};  // the model file alone is ~140 kB
    char out[512];
    snprintf(out, sizeof out, "%s", tpath("full"));
    int rc = reap(start_train(&so, out));
    char *t = log_text();
    if (rc != 1) fail_msg("train on a full disk: exit %d\n%s", rc, t);
    assert_non_null(strstr(t, "checkpoint"));
    assert_non_null(strstr(t, out));
    assert_true(strstr(t, "File too large") || strstr(t, "cannot write") || strstr(t, "cannot"));
    free(t);
    assert_int_equal(assert_checkpoints_complete(out), 0);
    char p[700];
    snprintf(p, sizeof p, "%s/model.safetensors", out);
    assert_false(fk_path_exists(p));
    assert_no_temporaries(out);
    // extract: the store's .partial hits the limit; no store under the final name
    char *a[32];
    char store[512];
    snprintf(store, sizeof store, "%s", tpath("full.fkd"));
    extract_args(a, ref_dir, store);
    rc = run_args(&so, a);
    t = log_text();
    if (rc != 1) fail_msg("extract on a full disk: exit %d\n%s", rc, t);
    assert_non_null(strstr(t, "full.fkd"));
    free(t);
    assert_false(fk_path_exists(store));
    // inputs untouched: the text and the model extracted from
    size_t n1;
    char *after = slurp(text_path, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    char *m2 = slurp(ref_cfg, &n1);
    assert_int_equal(nm, n1);
    assert_memory_equal(ref_model, m2, nm);
    free(before); free(after); free(ref_model); free(m2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_kill9_random),
        cmocka_unit_test(test_train_kill_during_checkpoint),
        cmocka_unit_test(test_train_sigint),
        cmocka_unit_test(test_train_sigterm),
        cmocka_unit_test(test_train_double_sigint),
        cmocka_unit_test(test_heal_sigint),
        cmocka_unit_test(test_library_stop_flag),
        cmocka_unit_test(test_extract_kill9_and_sigterm),
        cmocka_unit_test(test_full_disk),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
