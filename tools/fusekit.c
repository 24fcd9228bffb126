// fusekit: the command-line program. It parses arguments and prints; the library does the work.
#include "cli.h"

#include <string.h>

static const struct { const char *name; int (*fn)(int, char **); const char *help; } commands[] = {
    {"train", cmd_train, "train a model (from scratch, from a model folder, or resuming a checkpoint)"},
    {"eval", cmd_eval, "loss, perplexity and bits per byte of a model on a text or token shard"},
    {"generate", cmd_generate, "generate text with a KV cache (greedy, temperature, top-k, top-p)"},
    {"info", cmd_info, "a model's config, parameter counts and memory"},
};

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
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "fusekit: unknown command '%s' (see fusekit --help)\n", argv[1]);
    return 2;
}
