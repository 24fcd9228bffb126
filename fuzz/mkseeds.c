// Writes the generated seed inputs of the fuzz corpora into DIR: small .fkd stores (plain and
// aligned) and token shards (2- and 4-byte ids). The committed corpus/store and corpus/shard
// files came from it: fuzz_mkseeds DIR.
#include "fusekit/data.h"
#include "fusekit/store.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t lcg = 88172645463325252ull;
static uint32_t next(void) { lcg = lcg * 6364136223846793005ull + 1442695040888963407ull; return (uint32_t)(lcg >> 33); }

static int store(const char *dir, const char *name, int64_t n, int64_t V, int k, int seq, uint32_t flags) {
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    int64_t *begin = malloc((size_t)(n + 1) * sizeof *begin);
    begin[0] = 0;
    for (int64_t i = 0; i < n; i++) { ids[i] = (int32_t)(next() % (uint32_t)V); begin[i + 1] = begin[i] + 1 + next() % 3; }
    fk_store_header h = {flags, k, seq, V, n, begin[n], 1, 2, 3, FK_STORE_GRID_FINE};
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fk_store_writer *w;
    int64_t done;
    fk_status st = fk_store_writer_open(path, &h, ids, begin, true, &w, &done);
    int64_t ns = fk_store_header_n_seqs(&h);
    fk_store_seq q = {0};
    for (int64_t s = 0; st == FK_OK && s < ns; s++) {
        int64_t first = s * seq, pos = fk_store_header_positions(&h);
        int64_t m = pos - first < seq ? pos - first : seq;
        st = fk_store_seq_reserve(&q, m, k);
        if (st != FK_OK) break;
        q.first = first;
        q.n = m;
        double sum = 0;
        for (int64_t t = 0; t < m; t++) {
            int cnt = (flags & FK_STORE_ALIGNED) ? (int)(next() % (uint32_t)(k + 1)) : k;
            q.count[t] = (uint8_t)cnt;
            float lp = -0.5f - (float)(next() % 100) / 50.0f;
            for (int j = 0; j < k; j++) {
                q.ids[t * k + j] = j < cnt ? (int32_t)((ids[first + t] + j * 7) % V) : -1;
                q.logp[t * k + j] = j < cnt ? lp : -INFINITY;
                lp -= 0.3f + (float)(next() % 10) / 10.0f;
            }
            q.ce[t] = 1.0f + (float)(next() % 100) / 25.0f;
            sum += q.ce[t];
        }
        q.mean_ce = sum / (double)m;
        st = fk_store_write_seq(w, &q);
    }
    if (st == FK_OK) st = fk_store_writer_finish(w);
    fk_store_seq_free(&q);
    free(ids);
    free(begin);
    if (st != FK_OK) fprintf(stderr, "%s: %s\n", path, fk_last_error());
    return st == FK_OK ? 0 : 1;
}

static int shard(const char *dir, const char *name, int64_t n, int64_t V) {
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(next() % (uint32_t)V);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fk_status st = fk_shard_write(path, ids, n, V, n * 3, 0x1234567890abcdefull);
    free(ids);
    if (st != FK_OK) fprintf(stderr, "%s: %s\n", path, fk_last_error());
    return st == FK_OK ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: fuzz_mkseeds DIR\n"); return 2; }
    int bad = 0;
    bad |= store(argv[1], "small.fkd", 40, 50, 4, 16, 0);
    bad |= store(argv[1], "aligned.fkd", 30, 300, 3, 8, FK_STORE_ALIGNED);
    bad |= store(argv[1], "one.fkd", 2, 5, 1, 1, FK_STORE_BOS);
    bad |= shard(argv[1], "u16.tok", 100, 1000);
    bad |= shard(argv[1], "u32.tok", 50, 100000);
    bad |= shard(argv[1], "empty.tok", 0, 10);
    return bad;
}
