// fusekit fuse: knowledge fusion in one command — extract each source's distributions on the
// corpus (cached and resumable), align them to the target's tokens (cached), and train the
// target on lambda * CLM + (1 - lambda) * fusion. Options it does not know go to fusekit train.
#include "cli.h"
#include "fusekit/fusion.h"
#include "fusekit/store.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct { bool tty; const char *name; } extract_ui;

static bool on_extract(const fk_extract_progress *p, void *user) {
    extract_ui *ui = user;
    if (ui->tty) {
        double eta = p->positions_per_s > 0 && p->seqs_done > 0
                         ? p->elapsed_s * (double)(p->seqs_total - p->seqs_done) / (double)p->seqs_done : 0;
        fprintf(stderr, "\rextract %s: %lld/%lld sequences  %.0f positions/s  ETA %dm%02ds   ", ui->name, (long long)p->seqs_done,
                (long long)p->seqs_total, p->positions_per_s, (int)(eta / 60), (int)fmod(eta, 60));
        if (p->seqs_done == p->seqs_total) fputc('\n', stderr);
        fflush(stderr);
    }
    return !cli_stop_signal;  // Ctrl-C / SIGTERM: the store's .partial is kept and resumes
}

// Extracts (or finds cached) the store of one model on the corpus; *path gets its file.
fk_status cli_extract_store(const char *model_dir, const char *data, const char *store_dir, int k, bool tty, char **path) {
    *path = NULL;
    fk_model m = {0};
    fk_tokenizer *tok = NULL;
    fk_status st = cli_load_model(model_dir, NULL, FK_LOAD_FROZEN, &m, &tok);
    if (st == FK_OK && !tok)
        st = fk_error(FK_ERR_ARG, "%s has no tokenizer (tokenizer.json, or the GGUF's tokenizer.ggml.* keys): fusion needs every model's tokenizer", model_dir);
    if (st == FK_OK) {
        char base[512], name[600];
        cli_model_name(model_dir, base, sizeof base);
        snprintf(name, sizeof name, "%s-%016llx.fkd", base, (unsigned long long)fk_model_fingerprint(&m));
        *path = fk_path_join(store_dir, name);
        st = cli_store_tokenizer(*path, &tok);
    }
    if (st == FK_OK) {
        fk_extract_opts eo;
        fk_extract_defaults(&eo);
        eo.k = k;
        extract_ui ui = {tty, model_dir};
        double t0 = fk_time_s();
        bool stopped = false, cached = false;
        cli_stop_begin();
        st = fk_extract_ex(&m, tok, data, &eo, *path, false, on_extract, &ui, &stopped, &cached);  // (tokenizer saved above)
        cli_stop_end();
        if (st == FK_OK && stopped)
            st = fk_error(FK_ERR_IO, "interrupted while extracting %s; %s.partial is kept, run the same command again to resume", model_dir, *path);
        else if (st == FK_OK && cached) fprintf(stderr, "store %s (cached)\n", *path);
        else if (st == FK_OK) fprintf(stderr, "store %s (%.1f s)\n", *path, fk_time_s() - t0);
    }
    fk_tok_free(tok);
    fk_model_free(&m);
    if (st != FK_OK) { free(*path); *path = NULL; }
    return st;
}

static const char *fuse_usage =
    "usage: fusekit fuse --target T --source A [--source B ...] --data TEXT -o OUT [options] [fusekit train options]\n\n"
    "Knowledge fusion (FuseLLM) across tokenizers and architectures, in one command:\n"
    "  1. extract: each source's top-k next-token distributions on TEXT (OUT/stores/*.fkd, cached, resumable);\n"
    "     the target counts as a source too unless --no-target-source;\n"
    "  2. align: each store to the target's tokens and vocabulary (cached beside the stores);\n"
    "  3. train: the target (--init T) on TEXT with lambda * CLM + (1 - lambda) * fused teachers.\n"
    "--data (the fusion corpus, a text file) and -o (the fused model and its checkpoints) are train's too.\n"
    "Every fusekit train option is accepted (--steps, --lr, --lambda, --fusion, --fusion-level, --val, ...).";

// Everything fuse's flags set; pass holds the options that go on to train's training phase.
typedef struct {
    const char *target, *data, *out, *store_dir;
    const char *sources[CLI_LIST_MAX];
    int n_src;
    int64_t k;
    bool no_target;
    char **pass;  // "train" and the options fuse does not know, room for those fuse adds
    int np;
} fuse_cmd;

// Reads fuse's own flags into c, the rest into c->pass. Returns -1 to go on, else the exit code.
static int fuse_parse(int argc, char **argv, fuse_cmd *c) {
    cli_list src = {0};
    cli_opt opts[] = {
        {"--target", OPT_STR, &c->target, "the model to train: a fusekit / Hugging Face folder with tokenizer.json, or a .gguf file "
         "(trained in F32; the fused model is written as a folder)", false, NULL},
        {"--source", OPT_LIST, &src, "a source model, a folder or a .gguf file (repeat, or list several)", false, NULL},
        {"-k", OPT_INT, &c->k, "entries per position in the stores", false, "[1,64]"},
        {"--store-dir", OPT_STR, &c->store_dir, "where stores are kept (default OUT/stores)", false, NULL},
        {"--no-target-source", OPT_FLAG, &c->no_target, "do not use the target's own distributions as a teacher", false, NULL},
        CLI_ROWS_END,
    };
    c->pass[c->np++] = "train";
    int n = 0, rc = cli_parse_rest(argc, argv, opts, fuse_usage, c->pass + c->np, &n);
    if (rc >= 0) return rc;
    // --data and -o go on to train, and fuse reads them too
    for (int i = c->np; i < c->np + n; i++) {
        const char *a = c->pass[i];
        bool has_next = i + 1 < c->np + n;
        if (strcmp(a, "--data") == 0 && has_next) c->data = c->pass[i + 1];
        if ((strcmp(a, "-o") == 0 || strcmp(a, "--out") == 0) && has_next) c->out = c->pass[i + 1];
        if (strcmp(a, "--init") == 0 || strcmp(a, "--teacher") == 0 || strcmp(a, "--tokenizer") == 0) {
            fprintf(stderr, "fusekit fuse: error: %s is set by fuse itself (use --target / --source)\n", a);
            return 2;
        }
    }
    c->np += n;
    for (int i = 0; i < src.n; i++) c->sources[c->n_src++] = src.v[i];
    if (!c->target || c->n_src == 0 || !c->data || !c->out) {
        fprintf(stderr, "fusekit fuse: error: --target, --source, --data and --out are required (see --help)\n");
        return 2;
    }
    return -1;
}

// The output, and the options train gets, checked before any extraction. -1 to go on, else the exit code.
static int fuse_check(fuse_cmd *c) {
    const char *ins[CLI_LIST_MAX + 2];
    for (int i = 0; i < c->n_src; i++) ins[i] = c->sources[i];
    ins[c->n_src] = c->target;
    ins[c->n_src + 1] = c->store_dir;
    cli_out_spec os = {"-o", c->out, false, true};  // an existing OUT resumes (stores and checkpoints)
    int rc = cli_check_output("fuse", &os, ins, c->n_src + 2);
    if (rc != 0) return rc;
    c->pass[c->np] = "--init";
    c->pass[c->np + 1] = (char *)c->target;
    rc = cli_check_train_args(c->np + 2, c->pass);
    return rc != 0 ? rc : -1;
}

// Each teacher's store (the target's own first unless --no-target-source), extracted or cached.
static fk_status fuse_extract(const fuse_cmd *c, const char *sdir, char **stores, int *ns) {
    bool tty = isatty(2) != 0;
    fk_status st = FK_OK;
    if (!c->no_target) st = cli_extract_store(c->target, c->data, sdir, (int)c->k, tty, &stores[(*ns)++]);
    for (int i = 0; i < c->n_src && st == FK_OK; i++) {
        if (!c->no_target && strcmp(c->sources[i], c->target) == 0) continue;  // already in as the target
        st = cli_extract_store(c->sources[i], c->data, sdir, (int)c->k, tty, &stores[(*ns)++]);
    }
    return st;
}

// The training phase: train on the stores as teachers, resuming after an interrupt.
static int fuse_train(fuse_cmd *c, const char *sdir, char **stores, int ns) {
    c->pass[c->np++] = "--init";
    c->pass[c->np++] = (char *)c->target;
    c->pass[c->np++] = "--align-cache";
    c->pass[c->np++] = (char *)sdir;
    for (int i = 0; i < ns; i++) { c->pass[c->np++] = "--teacher"; c->pass[c->np++] = stores[i]; }
    // run again after an interrupt, fuse resumes its training (extraction resumes by itself)
    char *ck = NULL;
    bool again = fk_checkpoint_latest(c->out, &ck) == FK_OK;
    free(ck);
    for (int i = 1; i < c->np; i++) again = again && strcmp(c->pass[i], "--resume") != 0 && strcmp(c->pass[i], "--resume-from") != 0;
    if (again) c->pass[c->np++] = "--resume";
    cli_train_resumes_itself = true;
    int rc = cmd_train(c->np, c->pass);
    cli_train_resumes_itself = false;
    return rc;
}

int cmd_fuse(int argc, char **argv) {
    fuse_cmd c = {.k = 10};
    c.pass = calloc((size_t)argc + 2 * CLI_LIST_MAX + 8, sizeof *c.pass);
    if (!c.pass) return 1;
    int rc = fuse_parse(argc, argv, &c);
    if (rc < 0) rc = fuse_check(&c);
    if (rc >= 0) { free(c.pass); return rc; }
    char *sdir = c.store_dir ? strdup(c.store_dir) : fk_path_join(c.out, "stores");
    fk_status st = fk_mkdir_p(sdir);
    char *stores[CLI_LIST_MAX + 1] = {0};
    int ns = 0;
    if (st == FK_OK) st = fuse_extract(&c, sdir, stores, &ns);
    if (st != FK_OK && cli_stop_signal) { fprintf(stderr, "fusekit fuse: %s\n", fk_last_error()); rc = cli_stop_code(); }
    else if (st != FK_OK) rc = cli_fail("fuse", st);
    else rc = fuse_train(&c, sdir, stores, ns);
    for (int i = 0; i < ns; i++) free(stores[i]);
    free(sdir);
    free(c.pass);
    return rc;
}
