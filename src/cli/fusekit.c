// fusekit: the command-line program. It parses arguments and prints; the library does the work.
#include "cli.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef FK_WITH_MPI
#include <mpi.h>
#endif

static const cli_sub commands[] = {
    {"train", cmd_train, "train a model (from scratch, from a model folder, or resuming a checkpoint)"},
    {"eval", cmd_eval, "loss, perplexity and bits per byte of a model on a text or token shard"},
    {"generate", cmd_generate, "generate text with a KV cache (greedy, temperature, top-k, top-p; --chat: through the chat template)"},
    {"chat", cmd_chat, "talk with an instruct model through its chat template (SmolLM2, Llama 3, Qwen, Gemma, Phi, Mistral ...)"},
    {"info", cmd_info, "a model's config, parameter counts and memory"},
    {"tokenizer", cmd_tokenizer, "train, inspect and run tokenizers (train | encode | decode | info | convert)"},
    {"tokenize", cmd_tokenize, "encode text files into a token shard for train, eval and extract"},
    {"extract", cmd_extract, "a source model's top-k next-token distributions over a text, into a store (.fkd)"},
    {"align", cmd_align, "alignment report of sources against a target on a text: tokens aligned 1:1, vocabulary map coverage, mismatches"},
    {"fuse", cmd_fuse, "knowledge fusion in one command: extract sources, align to the target, fused training"},
    {"analyze", cmd_analyze, "redundancy statistics per layer (block influence, CKA, FFN and head Gram matrices)"},
    {"fold", cmd_fold, "fold redundancy away by a parameter budget (plan, FFN least-squares folding, layer ops; --rounds with healing)"},
    {"heal", cmd_heal, "distil a folded model from the model before folding (the fusion code path)"},
    {"prune", cmd_prune, "baselines at a parameter budget: magnitude or FLAP FFN pruning, ShortGPT layer drop"},
    {"merge", cmd_merge, "weight-space merge of same-architecture models (linear, task-arithmetic, ties, sce)"},
    {"demo", cmd_demo, "fusion and folding end to end on the embedded synthetic corpus, with report.html (--quick: a minute)"},
    {"export", cmd_export, "a model as a GGUF file for llama.cpp (llama, deci, gpt2, gemma, gemma2, gemma3, qwen3, starcoder2, phi3, gptneox, phi2, stablelm, mpt, falcon, olmo2; f32, f16 or bf16)"},
    {"import", cmd_import, "a GGUF file (llama, deci, gpt2, gemma, gemma2, gemma3, qwen2, qwen3, starcoder2, phi3, gptneox, phi2, stablelm, mpt, falcon, olmo2; F32/F16/BF16 or quantized tensors) as a model folder"},
    {"run", cmd_run, "run a recipe file (YAML or JSON: a pipeline of verbs with their options; or a mergekit merge config)"},
    {"data", cmd_data, "synthetic multi-domain corpus with held-out splits and task probes (data synth)"},
};

#ifdef FK_WITH_MPI
// FNV-1a, 64 bits, continued from h.
static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

// The running executable's bytes hashed (its version string where it cannot be read).
static uint64_t exe_fingerprint(void) {
    uint64_t h = 0xcbf29ce484222325ull;
    FILE *f = fopen("/proc/self/exe", "rb");
    if (!f) return fnv1a(h, FK_VERSION, strlen(FK_VERSION));
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) h = fnv1a(h, buf, n);
    fclose(f);
    return h;
}

// Every rank must run the same build with the same command line, as torchrun and DeepSpeed
// launch them (a rank with other options or another binary would train something else, or
// hang in a collective the others never reach). Rank 0's fingerprints (the executable's bytes;
// the arguments after the program's name) and command line are broadcast before any work; a
// rank that differs says how. Returns 0 when every rank agrees, 2 on every rank otherwise.
static int mpi_same_start(int argc, char **argv) {
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size == 1) return 0;
    char line[4096];
    size_t len = 0;
    uint64_t mine[2] = {exe_fingerprint(), 0xcbf29ce484222325ull}, root[2];
    for (int i = 1; i < argc; i++) {
        mine[1] = fnv1a(mine[1], argv[i], strlen(argv[i]) + 1);  // the terminating NUL separates
        int w = snprintf(line + len, sizeof line - len, "%s%s", i > 1 ? " " : "", argv[i]);
        if (w > 0) len = len + (size_t)w < sizeof line ? len + (size_t)w : sizeof line - 1;
    }
    char root_line[sizeof line];
    memcpy(root, mine, sizeof root);
    memcpy(root_line, line, sizeof line);
    MPI_Bcast(root, 2, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    MPI_Bcast(root_line, (int)sizeof root_line, MPI_CHAR, 0, MPI_COMM_WORLD);
    int bad = 1;
    if (mine[0] != root[0])
        fprintf(stderr, "fusekit: error: MPI rank %d runs another fusekit binary than rank 0 (content hash %016llx, rank 0's "
                        "%016llx): every rank must run the same build\n", rank, (unsigned long long)mine[0], (unsigned long long)root[0]);
    else if (mine[1] != root[1])
        fprintf(stderr, "fusekit: error: MPI rank %d was started as 'fusekit %s', rank 0 as 'fusekit %s': every rank must "
                        "get the same command line\n", rank, line, root_line);
    else bad = 0;
    int any = 0;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return any ? 2 : 0;
}
#endif

static void usage(void) {
    printf("fusekit %s — knowledge fusion and redundancy folding for causal language models\n\n"
           "usage: fusekit <command> [options]   (fusekit <command> --help for its options)\n\ncommands:\n", FK_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) printf("  %-10s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) { printf("fusekit %s\n", FK_VERSION); return 0; }
    cli_set_command_line(argc, argv);  // for the runs' report.html
    // OpenBLAS chose generic kernels for a CPU it does not know: restart once with the kernels
    // the CPU runs (the variable is read when OpenBLAS loads). A user's own setting is kept.
    const char *core = getenv("OPENBLAS_CORETYPE") ? NULL : fk_blas_better_core();
    if (core && setenv("OPENBLAS_CORETYPE", core, 1) == 0) execv("/proc/self/exe", argv);  // returns only on failure
    const cli_sub *c = cli_find_sub(commands, (int)(sizeof commands / sizeof commands[0]), argv[1]);
    if (c) {
#ifdef FK_WITH_MPI
        // Only the main thread calls MPI; OpenMP threads run inside each rank. Open MPI's TCP
        // transport moves a message's data only inside MPI calls unless its progress thread runs:
        // without it the gradient buckets started during the backward wait for the final
        // MPI_Waitall (no overlap: 0.97x one reduction after the backward over a 1 Gbit/s link,
        // 1.3-1.5x with it; bench/mpi_buckets_net.sh). A user's own setting is kept.
        setenv("OMPI_MCA_btl_tcp_progress_thread", "1", 0);
        int provided;
        MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
        if (mpi_same_start(argc, argv) != 0) {  // every rank knows: none waits in a collective
            MPI_Finalize();
            return 2;
        }
        int rc = c->fn(argc - 1, argv + 1);
        if (rc != 0) MPI_Abort(MPI_COMM_WORLD, rc);
        MPI_Finalize();
        return rc;
#else
        return c->fn(argc - 1, argv + 1);
#endif
    }
    fprintf(stderr, "fusekit: unknown command '%s' (see fusekit --help)\n", argv[1]);
    return 2;
}
