// fusekit fuse: knowledge fusion in one command (fk_fuse_run) — extract each source's
// distributions on the corpus (cached and resumable), align them to the target's tokens
// (cached), and train the target on lambda * CLM + (1 - lambda) * fusion. Its table holds
// train's rows too, so every option is checked before any extraction.
#include "cli.h"

#include <string.h>

static const char *fuse_usage =
    "usage: fusekit fuse --target T [--source A --source B ...] --data FILE -o OUT [options] [fusekit train options]\n\n"
    "Knowledge fusion (FuseLLM) across tokenizers and architectures, in one command:\n"
    "  1. extract: each source's top-k next-token distributions on TEXT (OUT/stores/*.fkd, cached, resumable);\n"
    "     the target counts as a source too unless --no-target-source;\n"
    "  2. align: each store to the target's tokens and vocabulary (cached beside the stores);\n"
    "  3. train: the target (--init T) on TEXT with lambda * CLM + (1 - lambda) * fused teachers.\n"
    "no --source: self-distillation, the target's initial model is the only teacher (a control for fusion).\n"
    "--data (the fusion corpus, a text file) and -o (the fused model and its checkpoints) are train's too.\n"
    "Every fusekit train option is accepted (--steps, --lr, --lambda, --fusion, --fusion-level, --val, ...).";

void cli_fuse_args_init(cli_fuse_args *a) {
    memset(a, 0, sizeof *a);
    fk_fuse_job_defaults(&a->job);
}

// The train options fuse sets itself.
static const char *const fuse_sets[] = {"--init", "--teacher", "--tokenizer", "--align-cache", NULL};

int cli_fuse_rows(cli_fuse_args *a, cli_opt *rows) {
    fk_fuse_job *j = &a->job;
    const cli_opt own[] = {
        {"--target", OPT_STR, &j->target, "the model to train: a fusekit / Hugging Face folder with tokenizer.json, or a .gguf file "
         "(trained in F32; the fused model is written as a folder)", false, NULL},
        {"--source", OPT_LIST, &j->sources, "a source model, a folder or a .gguf file (repeat, or list several)", false, NULL},
        {"-k", OPT_I32, &j->k, "entries per position in the stores", false, "[1,64]"},
        {"--store-dir", OPT_STR, &j->store_dir, "where stores are kept (default OUT/stores)", false, NULL},
        {"--no-target-source", OPT_FLAG, &j->no_target_source, "do not use the target's own distributions as a teacher", false, NULL},
        {"--extract-precision", OPT_CHOICE, CLI_ENUM(&j->extract_precision),
         "the products of the sources' extraction (default: --precision); int8: quantized (GGUF) sources' matrices multiply "
         "8-bit activations as llama.cpp's do (see --precision of extract)", false, "fp32|bf16|auto|int8"},
    };
    _Static_assert(sizeof own / sizeof own[0] + 1 + CLI_TRAIN_ROWS <= CLI_FUSE_ROWS, "CLI_FUSE_ROWS holds the own rows, the heading and train's");
    return cli_rows_then_train(own, (int)(sizeof own / sizeof own[0]), &j->train, &a->threads, fuse_sets, rows);
}

static fk_status run_fuse(const void *job, const fk_job_hooks *h, fk_train_job_result *r) { return fk_fuse_run(job, h, r); }

int cli_fuse_exec(cli_fuse_args *a) {
    const fk_fuse_job *j = &a->job;
    const char *ins[FK_PATH_LIST_MAX + 6];
    int n = 0;
    for (int i = 0; i < j->sources.n; i++) ins[n++] = j->sources.v[i];
    ins[n++] = j->target;
    ins[n++] = j->store_dir;
    ins[n++] = j->train.data;
    ins[n++] = j->train.val;
    ins[n++] = j->train.config;
    ins[n++] = j->train.resume_from;
    // an existing -o resumes (stores and checkpoints)
    return cli_job_exec(&(cli_job_spec){"fuse", run_fuse, j, &a->job.train, ins, n, a->threads, true});
}

int cmd_fuse(int argc, char **argv) {
    cli_fuse_args a;
    cli_opt rows[CLI_FUSE_ROWS];
    cli_fuse_args_init(&a);
    cli_fuse_rows(&a, rows);
    int rc = cli_parse_job("fuse", argc, argv, rows, fuse_usage, fuse_sets, "use --target / --source", &a.job.train);
    if (rc >= 0) return rc;
    if (!a.job.target || !a.job.train.data || !a.job.train.out) {
        fprintf(stderr, "fusekit fuse: error: --target, --data and --out are required (see --help)\n");
        return 2;
    }
    return cli_fuse_exec(&a);
}
