// Alignment benchmark: token alignment throughput (target tokens per second, one thread) in
// the offsets and DTW modes, the share of target positions that get a source distribution
// (1:1), distribution alignment throughput, and MinED vocabulary map build times, on real
// vocabulary pairs and corpora. Prints one JSON line per figure, then one line per target.
// usage: fk_align_bench [DATA_DIR]   (default ../shared/data: corpora/ and tokenizers/)
//   pairs (source -> target): llama-spm -> gpt-2, mpt -> phi-3
//   corpora: wikitext2/test.txt, shakespeare/input.txt, linux/train.txt, each encoded whole
//            with BOS/EOS as the tokenizer's configuration says
//   offsets mode: best of 3 runs; DTW mode: one run; the MinED map: one run on one thread
//   and one on all threads
#include "fusekit/align.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define OFFSET_RUNS 3
#define TARGET_OFFSETS_TPS 1e6
#define DIST_K 10

static const char *const corpora[][2] = {
    {"wikitext2", "corpora/wikitext2/test.txt"},
    {"shakespeare", "corpora/shakespeare/input.txt"},
    {"linux", "corpora/linux/train.txt"},
};
static const char *const pairs[][2] = {{"llama-spm", "gpt-2"}, {"mpt", "phi-3"}};
enum { N_CORPORA = sizeof corpora / sizeof corpora[0], N_PAIRS = sizeof pairs / sizeof pairs[0] };

static fk_tokenizer *load(const char *dir, const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "tokenizers/ggml-vocab-%s.gguf", name);
    char *path = fk_path_join(dir, rel);
    fk_tokenizer *t = NULL;
    if (!path || fk_tok_load(path, &t) != FK_OK) fprintf(stderr, "fk_align_bench: %s\n", path ? fk_last_error() : "out of memory");
    free(path);
    return t;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "../shared/data";
    if (argc > 2 || (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))) {
        fprintf(stderr, "usage: fk_align_bench [DATA_DIR]   (default ../shared/data)\n");
        return 2;
    }
    int max_threads = omp_get_max_threads();
    int failed = 0;
    double min_offsets_tps = -1;
    for (int p = 0; p < N_PAIRS; p++) {
        fk_tokenizer *S = load(dir, pairs[p][0]), *T = load(dir, pairs[p][1]);
        if (!S || !T) { fk_tok_free(S); fk_tok_free(T); failed = 1; continue; }

        // ---- vocabulary map (MinED), one thread and all threads
        int32_t *vmap = NULL;
        double vm_s[2] = {-1, -1};
        int threads[2] = {1, max_threads};
        for (int r = 0; r < (max_threads > 1 ? 2 : 1); r++) {
            omp_set_num_threads(threads[r]);
            int32_t *m = NULL;
            double t0 = fk_time_s();
            if (fk_vmap_build(S, T, FK_VMAP_MINED, &m) != FK_OK) {
                fprintf(stderr, "fk_align_bench: vocabulary map %s -> %s: %s\n", pairs[p][0], pairs[p][1], fk_last_error());
                failed = 1;
                break;
            }
            vm_s[r] = fk_time_s() - t0;
            if (!vmap) vmap = m;
            else free(m);
        }
        omp_set_num_threads(1);
        if (!vmap) { fk_tok_free(S); fk_tok_free(T); continue; }
        int32_t ns_vocab = fk_tok_vocab_size(S), exact = 0;
        for (int32_t v = 0; v < ns_vocab; v++) {
            char a[1024], b[1024];
            size_t na = fk_tok_token_bytes(S, v, a, sizeof a), nb = fk_tok_token_bytes(T, vmap[v], b, sizeof b);
            exact += na == nb && na <= sizeof a && memcmp(a, b, na) == 0;
        }
        printf("{\"bench\":\"vmap\",\"source\":\"%s\",\"target\":\"%s\",\"mode\":\"mined\",\"source_vocab\":%d,\"target_vocab\":%d,"
               "\"exact_matches\":%d,\"seconds_1_thread\":%.3f,\"seconds_all_threads\":%.3f,\"threads\":%d}\n",
               pairs[p][0], pairs[p][1], ns_vocab, fk_tok_vocab_size(T), exact, vm_s[0], vm_s[1] < 0 ? vm_s[0] : vm_s[1],
               max_threads);
        fflush(stdout);

        for (int c = 0; c < N_CORPORA; c++) {
            char *path = fk_path_join(dir, corpora[c][1]), *text = NULL;
            size_t len = 0;
            if (!path || fk_read_file(path, &text, &len) != FK_OK) {
                fprintf(stderr, "fk_align_bench: %s\n", path ? fk_last_error() : "out of memory");
                free(path);
                failed = 1;
                continue;
            }
            free(path);
            fk_tok_out so = {0}, to = {0};
            fk_tokseq s, t;
            int64_t *sb = NULL, *tb = NULL;
            if (fk_tok_encode(S, text, len, FK_ENC_ADD_SPECIAL, &so) != FK_OK || fk_tok_encode(T, text, len, FK_ENC_ADD_SPECIAL, &to) != FK_OK ||
                fk_tokseq_from_out(&so, &s, &sb) != FK_OK || fk_tokseq_from_out(&to, &t, &tb) != FK_OK) {
                fprintf(stderr, "fk_align_bench: encoding %s: %s\n", corpora[c][0], fk_last_error());
                failed = 1;
            } else {
                for (int mode = 0; mode < 2; mode++) {
                    fk_alignment a = {0};
                    double best = 1e30;
                    fk_status st = FK_OK;
                    for (int r = 0; r < (mode == FK_ALIGN_OFFSETS ? OFFSET_RUNS : 1) && st == FK_OK; r++) {
                        fk_alignment_free(&a);
                        double t0 = fk_time_s();
                        st = fk_align_tokens(S, &s, T, &t, (fk_align_mode)mode, vmap, &a);
                        double dt = fk_time_s() - t0;
                        if (dt < best) best = dt;
                    }
                    if (st != FK_OK) {
                        fprintf(stderr, "fk_align_bench: aligning %s: %s\n", corpora[c][0], fk_last_error());
                        failed = 1;
                        continue;
                    }
                    // DTW mode: how many 1:1 pairs also hold their source token alone, and
                    // how many have identical spans (predict from the same byte)
                    int64_t one = 0, exclusive = 0, same_span = 0;
                    for (int64_t j = 0; j < t.n; j++) {
                        if (!a.one_to_one[j]) continue;
                        int64_t i = a.lo[j];
                        one++;
                        exclusive += (j == 0 || a.hi[j - 1] <= i) && (j == t.n - 1 || a.lo[j + 1] > i);
                        same_span += s.begin[i] == t.begin[j] && s.begin[i + 1] == t.begin[j + 1];
                    }
                    double tps = (double)t.n / best;
                    printf("{\"bench\":\"align_tokens\",\"mode\":\"%s\",\"source\":\"%s\",\"target\":\"%s\",\"corpus\":\"%s\",\"bytes\":%zu,"
                           "\"source_tokens\":%lld,\"target_tokens\":%lld,\"seconds\":%.4f,\"target_tokens_per_s\":%.0f,"
                           "\"one_to_one_frac\":%.4f",
                           mode ? "dtw" : "offsets", pairs[p][0], pairs[p][1], corpora[c][0], len, (long long)s.n, (long long)t.n, best,
                           tps, (double)one / (double)t.n);
                    if (mode == FK_ALIGN_DTW)
                        printf(",\"exclusive_one_to_one_frac\":%.4f,\"one_to_one_same_span_frac\":%.4f", (double)exclusive / (double)t.n,
                               (double)same_span / (double)(one ? one : 1));
                    printf(",\"threads\":1,\"runs\":%d}\n", mode == FK_ALIGN_OFFSETS ? OFFSET_RUNS : 1);
                    fflush(stdout);
                    if (mode == FK_ALIGN_OFFSETS && (min_offsets_tps < 0 || tps < min_offsets_tps)) min_offsets_tps = tps;

                    // ---- distributions (offsets alignment only), on synthetic top-k data
                    if (mode == FK_ALIGN_OFFSETS && s.n > 1) {
                        int64_t np = s.n - 1;
                        uint8_t *cnt = malloc((size_t)np);
                        int32_t *ids = malloc(sizeof *ids * (size_t)np * DIST_K);
                        float *lp = malloc(sizeof *lp * (size_t)np * DIST_K), *ce = malloc(sizeof *ce * (size_t)np);
                        fk_rng rng;
                        fk_rng_seed(&rng, 1);
                        if (cnt && ids && lp && ce) {
                            for (int64_t i = 0; i < np; i++) {
                                cnt[i] = DIST_K;
                                float l = 0;
                                for (int e = 0; e < DIST_K; e++) {
                                    ids[i * DIST_K + e] = (int32_t)fk_rng_below(&rng, (uint64_t)ns_vocab);
                                    l -= fk_rng_uniform(&rng);
                                    lp[i * DIST_K + e] = l;
                                }
                                ce[i] = -lp[i * DIST_K];
                            }
                            fk_aligned_dist d;
                            double t0 = fk_time_s();
                            if (fk_align_dists(&a, &s, &t, vmap, DIST_K, cnt, ids, lp, ce, &d) == FK_OK) {
                                double dt = fk_time_s() - t0;
                                int64_t with = 0;
                                for (int64_t j = 0; j < d.n; j++) with += d.count[j] > 0;
                                printf("{\"bench\":\"align_dists\",\"source\":\"%s\",\"target\":\"%s\",\"corpus\":\"%s\",\"k\":%d,"
                                       "\"positions\":%lld,\"with_distribution_frac\":%.4f,\"seconds\":%.4f,\"positions_per_s\":%.0f,\"threads\":1}\n",
                                       pairs[p][0], pairs[p][1], corpora[c][0], DIST_K, (long long)d.n, (double)with / (double)(d.n ? d.n : 1),
                                       dt, (double)d.n / dt);
                                fflush(stdout);
                                fk_aligned_dist_free(&d);
                            } else {
                                fprintf(stderr, "fk_align_bench: aligning distributions: %s\n", fk_last_error());
                                failed = 1;
                            }
                        }
                        free(cnt); free(ids); free(lp); free(ce);
                    }
                    fk_alignment_free(&a);
                }
            }
            free(sb);
            free(tb);
            fk_tok_out_free(&so);
            fk_tok_out_free(&to);
            free(text);
        }
        free(vmap);
        fk_tok_free(S);
        fk_tok_free(T);
    }
    printf("{\"target\":\"offsets alignment >= 1M target tokens/s on one thread\",\"measured\":%.0f,\"met\":%s}\n", min_offsets_tps,
           min_offsets_tps >= TARGET_OFFSETS_TPS ? "true" : "false");
    return failed;
}
