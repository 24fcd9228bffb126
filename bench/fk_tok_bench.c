// Tokenizer benchmark: BPE training time and encode throughput. Prints one JSON line per
// figure, then one line per target saying whether it is met. Single-threaded.
// usage: fk_tok_bench [DATA_DIR]   (default ../shared/data: corpora/ and tokenizers/)
//   train:  an 8192-token vocabulary ("gpt-2" preset, special <|endoftext|>) on the first
//           4,000,000 bytes of wikitext2/test.txt + shakespeare/input.txt + linux/train.txt
//   encode: best of 3 runs over each whole corpus with the GPT-2 and Llama (SentencePiece)
//           vocabularies, no special tokens parsed or added
#include "fusekit/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#define TRAIN_BYTES 4000000
#define TRAIN_VOCAB 8192
#define ENCODE_RUNS 3
#define TARGET_ENCODE_MBPS 10.0
#define TARGET_TRAIN_S 10.0

static const char *const corpora[][2] = {
    {"wikitext2", "corpora/wikitext2/test.txt"},
    {"shakespeare", "corpora/shakespeare/input.txt"},
    {"linux", "corpora/linux/train.txt"},
};
static const char *const vocabs[][2] = {
    {"gpt-2", "tokenizers/ggml-vocab-gpt-2.gguf"},
    {"llama-spm", "tokenizers/ggml-vocab-llama-spm.gguf"},
};
enum { N_CORPORA = sizeof corpora / sizeof corpora[0], N_VOCABS = sizeof vocabs / sizeof vocabs[0] };

static char *read_in(const char *dir, const char *rel, size_t *n) {
    char *path = fk_path_join(dir, rel), *data = NULL;
    if (!path || fk_read_file(path, &data, n) != FK_OK) {
        fprintf(stderr, "fk_tok_bench: %s\n", path ? fk_last_error() : "out of memory");
        data = NULL;
    }
    free(path);
    return data;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "../shared/data";
    if (argc > 2 || (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))) {
        fprintf(stderr, "usage: fk_tok_bench [DATA_DIR]   (default ../shared/data)\n");
        return 2;
    }
    char *text[N_CORPORA];
    size_t len[N_CORPORA];
    for (int c = 0; c < N_CORPORA; c++)
        if (!(text[c] = read_in(dir, corpora[c][1], &len[c]))) return 1;
    int failed = 0;

    // ---- training (first, so that the peak RSS is the trainer's and the corpora's)
    double train_s = -1;
    {
        const char *texts[N_CORPORA];
        size_t lens[N_CORPORA], left = TRAIN_BYTES;
        int n = 0;
        for (int c = 0; c < N_CORPORA && left > 0; c++, n++) {
            texts[n] = text[c];
            lens[n] = len[c] < left ? len[c] : left;
            left -= lens[n];
        }
        const char *specials[] = {"<|endoftext|>"};
        fk_tok_train_opts o = {.vocab_size = TRAIN_VOCAB, .pre = "gpt-2", .specials = specials, .n_specials = 1};
        fk_tokenizer *t = NULL;
        fk_tok_train_stats st;
        double t0 = fk_time_s();
        if (fk_tok_train(&o, texts, lens, n, &t, &st) != FK_OK) {
            fprintf(stderr, "fk_tok_bench: training: %s\n", fk_last_error());
            failed = 1;
        } else {
            train_s = fk_time_s() - t0;
            printf("{\"bench\":\"train\",\"vocab_size\":%d,\"pre\":\"gpt-2\",\"bytes\":%lld,\"words\":%lld,\"unique_words\":%lld,"
                   "\"merges\":%d,\"seconds\":%.3f,\"seconds_pretokenize\":%.3f,\"seconds_merge\":%.3f,\"peak_rss_mb\":%.1f}\n",
                   fk_tok_vocab_size(t), (long long)st.bytes, (long long)st.words, (long long)st.unique_words, st.merges,
                   train_s, st.seconds_pretokenize, st.seconds_merge, fk_peak_rss_mb());
            fflush(stdout);
            fk_tok_free(t);
        }
    }

    // ---- encoding
    double gpt2_min_mbps = -1;
    const char *gpt2_min_corpus = "";
    fk_tok_out out = {0};
    for (int v = 0; v < N_VOCABS; v++) {
        char *path = fk_path_join(dir, vocabs[v][1]);
        fk_tokenizer *t = NULL;
        if (!path || fk_tok_load(path, &t) != FK_OK) {
            fprintf(stderr, "fk_tok_bench: %s\n", path ? fk_last_error() : "out of memory");
            free(path);
            failed = 1;
            continue;
        }
        free(path);
        for (int c = 0; c < N_CORPORA; c++) {
            double best = 1e30;
            int64_t tokens = 0;
            fk_status st = FK_OK;
            for (int r = 0; r < ENCODE_RUNS && st == FK_OK; r++) {
                fk_tok_out_clear(&out);
                double t0 = fk_time_s();
                st = fk_tok_encode(t, text[c], len[c], 0, &out);
                double dt = fk_time_s() - t0;
                if (dt < best) best = dt;
                tokens = out.n;
            }
            if (st != FK_OK) {
                fprintf(stderr, "fk_tok_bench: encoding %s with %s: %s\n", corpora[c][0], vocabs[v][0], fk_last_error());
                failed = 1;
                continue;
            }
            double mbps = (double)len[c] / 1e6 / best;
            printf("{\"bench\":\"encode\",\"vocab\":\"%s\",\"corpus\":\"%s\",\"bytes\":%zu,\"tokens\":%lld,"
                   "\"tokens_per_byte\":%.4f,\"seconds\":%.4f,\"mb_per_s\":%.2f,\"threads\":1,\"runs\":%d}\n",
                   vocabs[v][0], corpora[c][0], len[c], (long long)tokens, (double)tokens / (double)len[c], best, mbps,
                   ENCODE_RUNS);
            fflush(stdout);
            if (v == 0 && (gpt2_min_mbps < 0 || mbps < gpt2_min_mbps)) {
                gpt2_min_mbps = mbps;
                gpt2_min_corpus = corpora[c][0];
            }
        }
        fk_tok_free(t);
    }
    fk_tok_out_free(&out);

    // ---- targets: the slowest corpus must reach the encode target
    printf("{\"target\":\"encode_gpt2_mbps\",\"min\":%.0f,\"value\":%.2f,\"corpus\":\"%s\",\"met\":%s}\n", TARGET_ENCODE_MBPS,
           gpt2_min_mbps, gpt2_min_corpus, gpt2_min_mbps >= TARGET_ENCODE_MBPS ? "true" : "false");
    printf("{\"target\":\"train_8192_4mb_s\",\"max\":%.0f,\"value\":%.3f,\"met\":%s}\n", TARGET_TRAIN_S, train_s,
           train_s >= 0 && train_s <= TARGET_TRAIN_S ? "true" : "false");
    for (int c = 0; c < N_CORPORA; c++) free(text[c]);
    return failed;
}
