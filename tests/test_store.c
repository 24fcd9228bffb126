// Distribution stores: write/read round trips (source and aligned), the quantisation KL bound
// on flat, random and peaked distributions, fingerprint checks, truncated and corrupted files,
// torn partial records, and extraction with a real tiny model: resume gives a byte-identical
// file, stored top-k and cross-entropy equal a direct forward, a second run is a no-op.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fusekit/fusekit.h"
#include "fusekit/store.h"
#include "test_util.h"

// ------------------------------------------------------------------ helpers

static bool same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    bool same = na == nb && memcmp(x, y, na) == 0;
    free(x); free(y);
    return same;
}

static uint64_t rd64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static void wr32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }

// CRC-32 (zlib polynomial), bit by bit: an independent reference for the store's.
static uint32_t crc32_ref(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int b = 0; b < 8; b++) c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return ~c;
}

// A synthetic corpus: ids skewed toward small values (as BPE vocabularies are), byte spans
// of 0..4 bytes.
typedef struct {
    fk_store_header h;
    int32_t *ids;
    int64_t *begin;
} corpus;

static void corpus_make(corpus *c, fk_rng *r, int64_t n, int64_t V, int k, int seq, uint32_t flags) {
    memset(c, 0, sizeof *c);
    c->ids = malloc((size_t)n * sizeof(int32_t));
    c->begin = malloc((size_t)(n + 1) * sizeof(int64_t));
    c->begin[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        float u = fk_rng_uniform(r);
        c->ids[i] = (int32_t)((double)V * u * u * u);
        c->begin[i + 1] = c->begin[i] + (int64_t)fk_rng_below(r, 5);
    }
    c->h = (fk_store_header){flags, k, seq, V, n, c->begin[n], 0x1111, 0x2222, 0x3333, FK_STORE_GRID_FINE};
}

static void corpus_free(corpus *c) { free(c->ids); free(c->begin); }

// Fills q with sequence s of the corpus: per position, logits N(0, scale) (plus the label
// boosted, so that it is often among the entries), their exact log-softmax top-k, and the
// label's cross-entropy. Aligned stores get fewer entries (0 at some positions) and a ce of
// their own.
static void seq_make(const corpus *c, int64_t s, fk_rng *r, double scale, fk_store_seq *q) {
    const fk_store_header *h = &c->h;
    int k = h->k;
    int64_t first = s * h->seq, pos = fk_store_header_positions(h);
    int64_t n = pos - first < h->seq ? pos - first : h->seq;
    CHECK(fk_store_seq_reserve(q, n, k));
    q->first = first;
    q->n = n;
    int64_t V = h->vocab_size;
    double *z = malloc((size_t)V * sizeof(double));
    double sum_ce = 0;
    for (int64_t t = 0; t < n; t++) {
        int32_t y = c->ids[first + t + 1];
        double mx = -INFINITY, se = 0;
        for (int64_t v = 0; v < V; v++) {
            z[v] = scale * fk_rng_normal(r) + (v == y ? scale * 1.5 : 0);
            mx = z[v] > mx ? z[v] : mx;
        }
        for (int64_t v = 0; v < V; v++) se += exp(z[v] - mx);
        double lse = mx + log(se);
        int32_t *ids = q->ids + t * k;
        float *lp = q->logp + t * k;
        int m = 0;  // top-k by insertion
        for (int64_t v = 0; v < V; v++) {
            if (m == k && !(z[v] > z[ids[k - 1]])) continue;
            int j = m < k ? m++ : k - 1;
            while (j > 0 && z[ids[j - 1]] < z[v]) { ids[j] = ids[j - 1]; j--; }
            ids[j] = (int32_t)v;
        }
        int cnt = m;
        if (h->flags & FK_STORE_ALIGNED) cnt = (int)fk_rng_below(r, (uint64_t)k + 1);
        q->count[t] = (uint8_t)cnt;
        for (int j = 0; j < cnt; j++) lp[j] = (float)(z[ids[j]] - lse);
        q->ce[t] = h->flags & FK_STORE_ALIGNED ? 8 * fk_rng_uniform(r) : (float)(lse - z[y]);
        sum_ce += q->ce[t];
    }
    q->mean_ce = n ? sum_ce / (double)n : 0;
    free(z);
}

// Writes the whole corpus as a store, seed-determined, and keeps the exact sequences.
static fk_store_seq *write_store(const char *path, const corpus *c, uint64_t seed, double scale) {
    fk_store_writer *w;
    int64_t done;
    CHECK(fk_store_writer_open(path, &c->h, c->ids, c->begin, true, &w, &done));
    assert_int_equal(done, 0);
    int64_t ns = fk_store_header_n_seqs(&c->h);
    fk_store_seq *qs = calloc((size_t)ns, sizeof *qs);
    fk_rng r;
    fk_rng_seed(&r, seed);
    for (int64_t s = 0; s < ns; s++) {
        seq_make(c, s, &r, scale, &qs[s]);
        CHECK(fk_store_write_seq(w, &qs[s]));
    }
    CHECK(fk_store_writer_finish(w));
    return qs;
}

static void free_seqs(fk_store_seq *qs, int64_t n) {
    for (int64_t i = 0; i < n; i++) fk_store_seq_free(&qs[i]);
    free(qs);
}

// Every decoded sequence against what was written, within the documented errors.
static void check_store(const char *path, const corpus *c, const fk_store_seq *qs) {
    fk_store *s;
    CHECK(fk_store_open(path, &s));
    const fk_store_header *h = fk_store_header_of(s);
    assert_int_equal(h->flags, c->h.flags);
    assert_int_equal(h->k, c->h.k);
    assert_int_equal(h->seq, c->h.seq);
    assert_int_equal(h->vocab_size, c->h.vocab_size);
    assert_int_equal(h->n_tokens, c->h.n_tokens);
    assert_int_equal(h->corpus_bytes, c->h.corpus_bytes);
    assert_int_equal(h->model_fp, c->h.model_fp);
    assert_int_equal(h->tokenizer_fp, c->h.tokenizer_fp);
    assert_int_equal(h->corpus_fp, c->h.corpus_fp);
    assert_memory_equal(fk_store_token_ids(s), c->ids, (size_t)c->h.n_tokens * sizeof(int32_t));
    assert_memory_equal(fk_store_token_begin(s), c->begin, (size_t)(c->h.n_tokens + 1) * sizeof(int64_t));
    int64_t ns = fk_store_n_seqs(s);
    assert_int_equal(ns, fk_store_header_n_seqs(&c->h));
    int k = h->k;
    double ce_tol = fk_store_ce_error_bound(s);
    fk_store_seq q = {0};
    for (int64_t i = 0; i < ns; i++) {
        const fk_store_seq *p = &qs[i];
        CHECK(fk_store_read_seq(s, i, &q));
        assert_int_equal(q.first, p->first);
        assert_int_equal(q.n, p->n);
        assert_int_equal(q.k, k);
        assert_true(q.mean_ce == p->mean_ce);
        for (int64_t t = 0; t < q.n; t++) {
            assert_int_equal(q.count[t], p->count[t]);
            if (fabs(q.ce[t] - p->ce[t]) > ce_tol)
                fail_msg("sequence %lld position %lld: ce %g stored as %g (bound %g)", (long long)i, (long long)t, p->ce[t], q.ce[t], ce_tol);
            for (int j = 0; j < q.count[t]; j++) {
                assert_int_equal(q.ids[t * k + j], p->ids[t * k + j]);
                double off = (double)p->logp[t * k] - p->logp[t * k + j];
                double err = fabs((double)q.logp[t * k + j] - p->logp[t * k + j]);
                if (err > fk_store_logp_error_bound(s, off))
                    fail_msg("sequence %lld position %lld entry %d: logp %g stored as %g (offset %g, bound %g)", (long long)i, (long long)t, j,
                             p->logp[t * k + j], q.logp[t * k + j], off, fk_store_logp_error_bound(s, off));
                if (j > 0) assert_true(q.logp[t * k + j] <= q.logp[t * k + j - 1]);
            }
            for (int j = q.count[t]; j < k; j++) assert_int_equal(q.ids[t * k + j], -1);
        }
    }
    CHECK(fk_store_verify(s));
    fk_store_seq_free(&q);
    fk_store_close(s);
}

// ------------------------------------------------------------------ round trips

static void test_roundtrip(void **state) {
    (void)state;
    fk_rng r;
    fk_rng_seed(&r, 7);
    corpus c;
    corpus_make(&c, &r, 1000, 300, 10, 40, 0);
    fk_store_seq *qs = write_store(tpath("rt.fkd"), &c, 11, 2.0);
    check_store(tpath("rt.fkd"), &c, qs);
    assert_false(fk_path_exists(tpath("rt.fkd.partial")));
    free_seqs(qs, fk_store_header_n_seqs(&c.h));
    corpus_free(&c);
    // k = 1, a vocabulary smaller than k, one token (no positions), two tokens (one position)
    const int64_t ns[] = {500, 300, 1, 2};
    const int64_t vs[] = {50, 6, 10, 10};
    const int ks[] = {1, 8, 4, 64};
    for (int i = 0; i < 4; i++) {
        corpus_make(&c, &r, ns[i], vs[i], ks[i], 7, 0);
        qs = write_store(tpath("rt2.fkd"), &c, 12 + i, 3.0);
        check_store(tpath("rt2.fkd"), &c, qs);
        free_seqs(qs, fk_store_header_n_seqs(&c.h));
        corpus_free(&c);
    }
}

static void test_roundtrip_aligned(void **state) {
    (void)state;
    fk_rng r;
    fk_rng_seed(&r, 8);
    corpus c;
    corpus_make(&c, &r, 700, 1000, 10, 64, FK_STORE_ALIGNED);
    fk_store_seq *qs = write_store(tpath("al.fkd"), &c, 21, 2.0);
    int64_t zeros = 0;
    for (int64_t i = 0; i < fk_store_header_n_seqs(&c.h); i++)
        for (int64_t t = 0; t < qs[i].n; t++) zeros += qs[i].count[t] == 0;
    assert_true(zeros > 0);
    check_store(tpath("al.fkd"), &c, qs);
    free_seqs(qs, fk_store_header_n_seqs(&c.h));
    corpus_free(&c);
    // a source store refuses a position without entries, an aligned one a repeated id
    corpus_make(&c, &r, 50, 100, 4, 64, 0);
    fk_store_writer *w;
    int64_t done;
    CHECK(fk_store_writer_open(tpath("bad.fkd"), &c.h, c.ids, c.begin, true, &w, &done));
    fk_store_seq q = {0};
    seq_make(&c, 0, &r, 1.0, &q);
    q.count[3] = 0;
    assert_int_equal(fk_store_write_seq(w, &q), FK_ERR_ARG);
    q.count[3] = 4;
    q.ids[3 * 4 + 2] = q.ids[3 * 4 + 1];
    assert_int_equal(fk_store_write_seq(w, &q), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "twice"));
    fk_store_writer_close(w);
    fk_store_seq_free(&q);
    corpus_free(&c);
}

// ------------------------------------------------------------------ quantisation KL

// The documented bound on KL(P||Q) at a position: with e_j the bound on entry j's error
// relative to the top-1, KL <= 1/2 sum_j P_j e_j^2 exp(e_j) (from e^x <= 1 + x + x^2/2 e^|x|).
static void test_kl_bound(void **state) {
    (void)state;
    const double scales[] = {0.3, 2.0, 8.0};  // flat, random, peaked
    const char *names[] = {"flat", "random", "peaked"};
    for (int sc = 0; sc < 3; sc++) {
        fk_rng r;
        fk_rng_seed(&r, 30 + sc);
        corpus c;
        corpus_make(&c, &r, 3000, 500, 10, 128, 0);
        fk_store_seq *qs = write_store(tpath("kl.fkd"), &c, 40 + sc, scales[sc]);
        fk_store *s;
        CHECK(fk_store_open(tpath("kl.fkd"), &s));
        fk_store_seq q = {0};
        double *kl = malloc(128 * sizeof(double)), sum = 0, mx = 0;
        int64_t n = 0;
        for (int64_t i = 0; i < fk_store_n_seqs(s); i++) {
            CHECK(fk_store_read_seq(s, i, &q));
            CHECK(fk_store_seq_kl(&qs[i], &q, kl));
            for (int64_t t = 0; t < q.n; t++) {
                const float *lp = qs[i].logp + t * 10;
                double z = 0, b = 0;
                for (int j = 0; j < 10; j++) z += exp((double)lp[j] - lp[0]);
                for (int j = 0; j < 10; j++) {
                    double e = fk_store_offset_error_bound(s, (double)lp[0] - lp[j]);
                    b += 0.5 * exp((double)lp[j] - lp[0]) / z * e * e * exp(e);
                }
                if (!(kl[t] <= b * (1 + 1e-6) + 1e-9))
                    fail_msg("%s: KL %g above its bound %g at sequence %lld position %lld", names[sc], kl[t], b, (long long)i, (long long)t);
                sum += kl[t];
                mx = kl[t] > mx ? kl[t] : mx;
                n++;
            }
        }
        print_message("%s distributions: KL mean %.3e max %.3e over %lld positions\n", names[sc], sum / n, mx, (long long)n);
        assert_true(sum / n <= 1e-3);
        assert_true(sum > 0);  // quantisation does something: the measure is not vacuous
        free(kl);
        fk_store_seq_free(&q);
        fk_store_close(s);
        free_seqs(qs, fk_store_header_n_seqs(&c.h));
        corpus_free(&c);
    }
}

// ------------------------------------------------------------------ the compact preset

// Probability errors of the stored rows against the exact ones, as fusekit/store.h states them:
// with b_j = fk_store_logp_error_bound and e_j = fk_store_offset_error_bound at entry j's offset,
//   full-softmax p_j: |p^_j - p_j| <= p_j (exp(b_j) - 1); tail mass 1 - sum p_j: within sum_j p_j (exp(b_j) - 1);
//   renormalised P_j: |log Q_j - log P_j| <= e_j + E, E = log sum_i P_i exp(e_i), so |Q_j - P_j| <= P_j (exp(e_j + E) - 1);
//   the soft cross-entropy -sum_j P_j log s_j of a student row s: within sum_j |Q_j - P_j| |log s_j|.
// Returns the largest |log Q_j - log P_j| seen, the mean KL(P||Q) and the mean |delta loss| in out[0..2].
static void check_prob_errors(const char *path, const fk_store_seq *qs, fk_rng *r, double *out) {
    fk_store *s;
    CHECK(fk_store_open(path, &s));
    int k = fk_store_header_of(s)->k;
    fk_store_seq q = {0};
    double worst = 0, kl_sum = 0, dl_sum = 0, *kl = malloc((size_t)fk_store_header_of(s)->seq * sizeof(double));
    int64_t n = 0;
    for (int64_t i = 0; i < fk_store_n_seqs(s); i++) {
        const fk_store_seq *p = &qs[i];
        CHECK(fk_store_read_seq(s, i, &q));
        CHECK(fk_store_seq_kl(p, &q, kl));
        for (int64_t t = 0; t < q.n; t++, n++) {
            int cnt = p->count[t];
            const float *pl = p->logp + t * k, *ql = q.logp + t * k;
            double zp = 0, zq = 0, sp = 0, sq = 0, tail_bound = 0, E = 0;
            for (int j = 0; j < cnt; j++) {
                double pj = exp((double)pl[j]), qj = exp((double)ql[j]), b = fk_store_logp_error_bound(s, (double)pl[0] - pl[j]);
                if (fabs(qj - pj) > pj * expm1(b) * (1 + 1e-9) + 1e-12) fail_msg("%s: p %g stored as %g (bound %g)", path, pj, qj, pj * expm1(b));
                tail_bound += pj * expm1(b);
                sp += pj; sq += qj;
                zp += exp((double)pl[j] - pl[0]);
                zq += exp((double)ql[j] - ql[0]);
            }
            if (fabs((1 - sq) - (1 - sp)) > tail_bound * (1 + 1e-9) + 1e-12) fail_msg("%s: tail mass %g stored as %g (bound %g)", path, 1 - sp, 1 - sq, tail_bound);
            for (int j = 0; j < cnt; j++) E += exp((double)pl[j] - pl[0]) / zp * exp(fk_store_offset_error_bound(s, (double)pl[0] - pl[j]));
            E = log(E);
            double loss_p = 0, loss_q = 0, loss_bound = 0;
            for (int j = 0; j < cnt; j++) {
                double lP = (double)pl[j] - pl[0] - log(zp), lQ = (double)ql[j] - ql[0] - log(zq);
                double e = fk_store_offset_error_bound(s, (double)pl[0] - pl[j]) + E;
                if (fabs(lQ - lP) > e * (1 + 1e-6) + 1e-7) fail_msg("%s: renormalised log-prob %g stored as %g (bound %g)", path, lP, lQ, e);
                worst = fabs(lQ - lP) > worst ? fabs(lQ - lP) : worst;
                double ls = log(0.02 + fk_rng_uniform(r));  // a student's log-probability, up to a constant
                loss_p -= exp(lP) * ls;
                loss_q -= exp(lQ) * ls;
                loss_bound += fabs(exp(lQ) - exp(lP)) * fabs(ls);
            }
            if (fabs(loss_q - loss_p) > loss_bound * (1 + 1e-9) + 1e-12) fail_msg("%s: soft cross-entropy %g vs %g (bound %g)", path, loss_p, loss_q, loss_bound);
            dl_sum += fabs(loss_q - loss_p);
            kl_sum += kl[t];
        }
    }
    out[0] = worst;
    out[1] = kl_sum / (double)n;
    out[2] = dl_sum / (double)n;
    free(kl);
    fk_store_seq_free(&q);
    fk_store_close(s);
}

// FK_STORE_GRID_COMPACT round trips within its stated bounds on flat, random and peaked rows
// (ids, counts and order exact; log-probs, probabilities, tail mass, renormalised rows, KL and
// a soft cross-entropy within their bounds); the fine preset's store of the same rows is larger.
static void test_compact_grid(void **state) {
    (void)state;
    const double scales[] = {0.3, 2.0, 8.0};
    const char *names[] = {"flat", "random", "peaked"};
    for (int sc = 0; sc < 3; sc++) {
        int64_t bytes[2];
        for (int g = 0; g < 2; g++) {
            fk_rng r;
            fk_rng_seed(&r, 50 + sc);
            corpus c;
            corpus_make(&c, &r, 3000, 500, 10, 128, 0);
            c.h.grid = g ? FK_STORE_GRID_COMPACT : FK_STORE_GRID_FINE;
            fk_store_seq *qs = write_store(tpath("cg.fkd"), &c, 60 + sc, scales[sc]);
            check_store(tpath("cg.fkd"), &c, qs);
            fk_store *s;
            CHECK(fk_store_open(tpath("cg.fkd"), &s));
            assert_int_equal(fk_store_header_of(s)->grid, c.h.grid);
            bytes[g] = fk_store_file_bytes(s);
            if (g) {  // the stated bounds of the compact preset
                assert_true(fabs(fk_store_offset_error_bound(s, 1.0) - 0.125) < 1e-5);
                assert_true(fabs(fk_store_offset_error_bound(s, 3.0) - 0.25) < 1e-5);
                assert_true(fabs(fk_store_logp_error_bound(s, 0.5) - 0.1875) < 1e-5);
                assert_true(fabs(fk_store_ce_error_bound(s) - 0.0625) < 1e-4);
            }
            fk_store_close(s);
            double e[3];
            check_prob_errors(tpath("cg.fkd"), qs, &r, e);
            print_message("%s rows, %s: %lld bytes, max |log Q - log P| %.4f, KL mean %.3e, mean |delta soft CE| %.3e\n", names[sc],
                          g ? "compact" : "fine", (long long)bytes[g], e[0], e[1], e[2]);
            assert_true(e[1] > 0);
            assert_true(e[1] <= (g ? 4e-3 : 1e-3));  // the mean KL each preset is documented to stay under on these rows
            free_seqs(qs, fk_store_header_n_seqs(&c.h));
            corpus_free(&c);
        }
        assert_true(bytes[1] < bytes[0]);
    }
    // a preset that does not exist is refused, naming it
    fk_rng r;
    fk_rng_seed(&r, 70);
    corpus c;
    corpus_make(&c, &r, 50, 100, 4, 64, 0);
    c.h.grid = 7;
    fk_store_writer *w = NULL;
    int64_t done;
    assert_int_equal(fk_store_writer_open(tpath("bad.fkd"), &c.h, c.ids, c.begin, true, &w, &done), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "quantisation preset 7"));
    corpus_free(&c);
}

// Stores written before the presets existed (the fuzz corpus's seeds, committed) decode to
// exactly what they decoded to then: FNV-1a of every decoded id, span, count, log-prob and ce.
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 1099511628211ull; }
    return h;
}

static void test_old_stores_unchanged(void **state) {
    (void)state;
    const char *names[] = {"aligned.fkd", "one.fkd", "small.fkd"};
    const uint64_t want[] = {0x381fd264743d8795ull, 0x56deda2153807739ull, 0xff022cf69f8e616aull};
    for (int f = 0; f < 3; f++) {
        char path[600];
        snprintf(path, sizeof path, "%s/../../fuzz/corpus/store/%s", FK_TEST_DATA, names[f]);
        fk_store *s;
        CHECK(fk_store_open(path, &s));
        const fk_store_header *h = fk_store_header_of(s);
        assert_int_equal(h->grid, FK_STORE_GRID_FINE);
        uint64_t x = 1469598103934665603ull;
        x = fnv(x, fk_store_token_ids(s), 4 * (size_t)h->n_tokens);
        x = fnv(x, fk_store_token_begin(s), 8 * (size_t)(h->n_tokens + 1));
        fk_store_seq q = {0};
        for (int64_t c = 0; c < fk_store_n_seqs(s); c++) {
            CHECK(fk_store_read_seq(s, c, &q));
            x = fnv(x, q.count, (size_t)q.n);
            x = fnv(x, q.ids, 4 * (size_t)(q.n * q.k));
            x = fnv(x, q.logp, 4 * (size_t)(q.n * q.k));
            x = fnv(x, q.ce, 4 * (size_t)q.n);
            x = fnv(x, &q.mean_ce, 8);
        }
        if (x != want[f]) fail_msg("%s decodes to %016llx, before the presets %016llx", names[f], (unsigned long long)x, (unsigned long long)want[f]);
        fk_store_seq_free(&q);
        fk_store_close(s);
    }
}

// ------------------------------------------------------------------ fingerprints

static void test_fingerprints(void **state) {
    (void)state;
    fk_rng r;
    fk_rng_seed(&r, 9);
    corpus c;
    corpus_make(&c, &r, 100, 50, 5, 16, 0);
    free_seqs(write_store(tpath("fp.fkd"), &c, 1, 1.0), fk_store_header_n_seqs(&c.h));
    fk_store *s;
    CHECK(fk_store_open(tpath("fp.fkd"), &s));
    CHECK(fk_store_check(s, 0x1111, 0x2222, 0x3333));
    CHECK(fk_store_check(s, 0, 0, 0));
    assert_int_equal(fk_store_check(s, 0x1112, 0, 0), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "model fingerprint"));
    assert_non_null(strstr(fk_last_error(), "fp.fkd"));
    assert_int_equal(fk_store_check(s, 0x1111, 0x2223, 0x3333), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "tokenizer fingerprint"));
    assert_int_equal(fk_store_check(s, 0, 0, 0x3334), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "corpus fingerprint"));
    fk_store_close(s);
    corpus_free(&c);

    // the model fingerprint follows every weight and the per-layer widths
    fk_config cfg;
    fk_config_llama(&cfg, 64, 16, 2, 2, 1, 24, 16);
    fk_model m, m2;
    CHECK(fk_model_init(&m, &cfg));
    fk_model_init_weights(&m, 5);
    uint64_t f0 = fk_model_fingerprint(&m);
    assert_int_equal(f0, fk_model_fingerprint(&m));
    float keep = m.w[m.n_floats / 2];
    m.w[m.n_floats / 2] = nextafterf(keep, 1e9f);
    assert_true(fk_model_fingerprint(&m) != f0);
    m.w[m.n_floats / 2] = keep;
    assert_int_equal(fk_model_fingerprint(&m), f0);
    cfg.ffn[1] = 20;
    CHECK(fk_model_init(&m2, &cfg));
    fk_model_init_weights(&m2, 5);
    assert_true(fk_model_fingerprint(&m2) != f0);
    fk_model_free(&m2);
    // ... and the Gemma switches (same weights, other logits)
    cfg.ffn[1] = 24;
    for (int k = 0; k < 3; k++) {
        fk_config g = cfg;
        if (k == 0) g.final_softcap = 30;
        if (k == 1) { g.sliding_window = 4; g.sliding[1] = 1; }
        if (k == 2) g.emb_scale = 4;
        CHECK(fk_model_init(&m2, &g));
        fk_model_init_weights(&m2, 5);
        assert_memory_equal(m2.w, m.w, (size_t)m.n_floats * sizeof(float));
        assert_true(fk_model_fingerprint(&m2) != f0);
        fk_model_free(&m2);
    }
    fk_model_free(&m);
    char text[] = "the same text";
    uint64_t t0 = fk_corpus_fingerprint(text, sizeof text - 1);
    text[3] = '_';
    assert_true(fk_corpus_fingerprint(text, sizeof text - 1) != t0);
}

// ------------------------------------------------------------------ broken files

static void test_truncated_and_corrupt(void **state) {
    (void)state;
    fk_rng r;
    fk_rng_seed(&r, 10);
    corpus c;
    corpus_make(&c, &r, 120, 40, 4, 16, 0);
    free_seqs(write_store(tpath("tr.fkd"), &c, 3, 2.0), fk_store_header_n_seqs(&c.h));
    size_t n;
    char *good = slurp(tpath("tr.fkd"), &n);
    const char *bad = tpath("tr_bad.fkd");
    // the checksums are standard CRC-32s (the footer's: of the index, of the header)
    assert_int_equal(crc32_ref((const uint8_t *)"123456789", 9), 0xCBF43926u);
    const uint8_t *ft = (const uint8_t *)good + n - 32;
    assert_int_equal(rd32(ft + 16), crc32_ref((const uint8_t *)good + rd64(ft), n - 32 - rd64(ft)));
    assert_int_equal(rd32(ft + 20), crc32_ref((const uint8_t *)good, 128));
    assert_memory_equal(ft + 24, "FKDSTEND", 8);
    for (size_t cut = 0; cut < n; cut++) {
        spit(bad, good, cut);
        fk_store *s = NULL;
        fk_status st = fk_store_open(bad, &s);
        if (st != FK_ERR_FORMAT) fail_msg("cut at %zu of %zu bytes: open gave %s", cut, n, fk_status_name(st));
        assert_null(s);
        assert_non_null(strstr(fk_last_error(), "tr_bad.fkd"));
    }
    // every single-byte corruption is caught, at open or when the sequences are read
    int at_open = 0, at_read = 0;
    for (size_t i = 0; i < n; i++) {
        good[i] ^= 0x5A;
        spit(bad, good, n);
        good[i] ^= 0x5A;
        fk_store *s = NULL;
        fk_status st = fk_store_open(bad, &s);
        if (st == FK_OK) {
            st = fk_store_verify(s);
            fk_store_close(s);
            if (st == FK_OK) fail_msg("corrupting byte %zu of %zu went unnoticed", i, n);
            at_read++;
        } else {
            at_open++;
        }
        assert_int_equal(st, FK_ERR_FORMAT);
        assert_non_null(strstr(fk_last_error(), "tr_bad.fkd"));
    }
    print_message("%zu bytes: %d corruptions caught at open, %d when reading\n", n, at_open, at_read);
    // The same with every section's checksum recomputed, so the decoders themselves see the
    // damage: each must fail cleanly or decode something in range, never crash (ASan).
    uint64_t tok_bytes = rd64((uint8_t *)good + 88), rec0 = 128 + tok_bytes, index_off = rd64((uint8_t *)good + n - 32);
    int decoded = 0;
    for (size_t i = 128; i < index_off; i++) {
        char *b = malloc(n);
        memcpy(b, good, n);
        b[i] ^= 0x21;
        uint8_t *u = (uint8_t *)b;
        wr32(u + 136, crc32_ref(u + 144, tok_bytes - 16));
        for (uint64_t off = rec0; off < index_off;) {  // prior section, then records: u32 length, u32 CRC
            uint32_t len = rd32((uint8_t *)good + off);
            if (off + 8 + len > index_off) break;
            wr32(u + off + 4, crc32_ref(u + off + 8, len));
            off += 8 + len;
        }
        spit(bad, b, n);
        free(b);
        fk_store *s = NULL;
        if (fk_store_open(bad, &s) == FK_OK) {
            fk_store_seq q = {0};
            for (int64_t c2 = 0; c2 < fk_store_n_seqs(s); c2++) {
                if (fk_store_read_seq(s, c2, &q) != FK_OK) continue;
                decoded++;
                for (int64_t t = 0; t < q.n; t++)
                    for (int j = 0; j < q.count[t]; j++) assert_true(q.ids[t * q.k + j] >= 0 && q.ids[t * q.k + j] < 40);
            }
            fk_store_seq_free(&q);
            fk_store_close(s);
        }
    }
    assert_true(decoded > 0);
    free(good);
    corpus_free(&c);
}

// A torn record at the end of a .partial is cut off when the writer resumes, and the result
// equals an uninterrupted write.
static void test_torn_partial(void **state) {
    (void)state;
    fk_rng r;
    fk_rng_seed(&r, 12);
    corpus c;
    corpus_make(&c, &r, 400, 80, 6, 16, 0);
    int64_t ns = fk_store_header_n_seqs(&c.h);
    fk_store_seq *qs = write_store(tpath("ref.fkd"), &c, 5, 2.0);
    const char *out = tpath("torn.fkd"), *part = tpath("torn.fkd.partial");
    fk_store_writer *w;
    int64_t done;
    CHECK(fk_store_writer_open(out, &c.h, c.ids, c.begin, true, &w, &done));
    for (int64_t i = 0; i < 5; i++) CHECK(fk_store_write_seq(w, &qs[i]));
    assert_int_equal(fk_store_write_seq(w, &qs[7]), FK_ERR_ARG);  // out of order
    fk_store_writer_close(w);
    assert_false(fk_path_exists(out));
    struct stat sb;
    assert_int_equal(stat(part, &sb), 0);
    // torn: the last record loses its last 3 bytes
    assert_int_equal(truncate(part, sb.st_size - 3), 0);
    CHECK(fk_store_writer_open(out, &c.h, c.ids, c.begin, false, &w, &done));
    assert_int_equal(done, 4);
    CHECK(fk_store_write_seq(w, &qs[4]));
    CHECK(fk_store_write_seq(w, &qs[5]));
    fk_store_writer_close(w);
    // garbage after the last record (a record header promising more than is there)
    FILE *f = fopen(part, "ab");
    fwrite("\x40\x00\x00\x00garbage", 1, 11, f);
    fclose(f);
    CHECK(fk_store_writer_open(out, &c.h, c.ids, c.begin, false, &w, &done));
    assert_int_equal(done, 6);
    for (int64_t i = done; i < ns; i++) CHECK(fk_store_write_seq(w, &qs[i]));
    CHECK(fk_store_writer_finish(w));
    assert_true(same_file(out, tpath("ref.fkd")));
    assert_false(fk_path_exists(part));

    // a partial of another extraction is refused, naming the difference, or restarted
    CHECK(fk_store_writer_open(out, &c.h, c.ids, c.begin, false, &w, &done));
    CHECK(fk_store_write_seq(w, &qs[0]));
    fk_store_writer_close(w);
    fk_store_header h2 = c.h;
    h2.model_fp ^= 1;
    assert_int_equal(fk_store_writer_open(out, &h2, c.ids, c.begin, false, &w, &done), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "model fingerprint"));
    CHECK(fk_store_writer_open(out, &h2, c.ids, c.begin, true, &w, &done));
    assert_int_equal(done, 0);
    fk_store_writer_close(w);
    // finishing early is refused
    CHECK(fk_store_writer_open(tpath("short.fkd"), &c.h, c.ids, c.begin, true, &w, &done));
    assert_int_equal(fk_store_writer_finish(w), FK_ERR_ARG);
    free_seqs(qs, ns);
    corpus_free(&c);
}

// ------------------------------------------------------------------ extraction

static fk_model tiny;
static fk_tokenizer *bytes_tok;
static char text_path[512];

static int extract_setup(void **s) {
    if (tmpdir_setup(s) != 0) return -1;
    fk_config cfg;
    fk_config_llama(&cfg, 256, 32, 2, 2, 1, 64, 64);
    if (fk_model_init(&tiny, &cfg) != FK_OK) return -1;
    fk_model_init_weights(&tiny, 42);
    // make the random model's predictions less flat, so that the top-k is not all ties
    for (int64_t i = 0; i < tiny.cfg.vocab_size * tiny.cfg.d_model; i++) tiny.w[tiny.lm_head + i] *= 40;
    if (fk_tok_new_bytes(&bytes_tok) != FK_OK) return -1;
    static const char *const words[] = {"the ", "king ", "shall ", "not ", "die, ", "my ", "lord.\n", "O ", "Romeo! ", "what ", "light ", "\xc3\xa9t\xc3\xa9 "};
    fk_rng r;
    fk_rng_seed(&r, 3);
    char *buf = malloc(5000);
    size_t n = 0;
    while (n < 4500) {
        const char *w = words[fk_rng_below(&r, 12)];
        memcpy(buf + n, w, strlen(w));
        n += strlen(w);
    }
    snprintf(text_path, sizeof text_path, "%s", tpath("corpus.txt"));
    spit(text_path, buf, n);
    free(buf);
    return 0;
}

static int extract_teardown(void **s) {
    fk_model_free(&tiny);
    fk_tok_free(bytes_tok);
    return tmpdir_teardown(s);
}

typedef struct { int calls, stop_after; } stopper;
static bool stop_cb(const fk_extract_progress *p, void *user) {
    stopper *s = user;
    s->calls++;
    assert_true(p->seqs_done <= p->seqs_total);
    return s->stop_after <= 0 || p->seqs_done < s->stop_after;
}

static void test_extract_resume(void **state) {
    (void)state;
    fk_extract_opts o = {10, 32, 3, FK_STORE_GRID_FINE, FK_PRECISION_FP32, 0};
    const char *a = tpath("a.fkd"), *b = tpath("b.fkd");
    CHECK(fk_extract(&tiny, bytes_tok, text_path, &o, a, true, NULL, NULL));
    // stopped after 5 sequences (inside a batch of 3), then after 13, then to the end
    const int stops[] = {5, 13, 0};
    for (int i = 0; i < 3; i++) {
        stopper sp = {0, stops[i]};
        bool stopped, cached;
        CHECK(fk_extract_ex(&tiny, bytes_tok, text_path, &o, b, false, stop_cb, &sp, &stopped, &cached));
        assert_false(cached);
        assert_int_equal(stopped, stops[i] > 0);
        assert_int_equal(fk_path_exists(b), stops[i] == 0);
    }
    assert_true(same_file(a, b));

    // a second extraction of a complete store does nothing
    struct stat s1, s2;
    assert_int_equal(stat(a, &s1), 0);
    stopper sp = {0, 0};
    bool stopped, cached;
    CHECK(fk_extract_ex(&tiny, bytes_tok, text_path, &o, a, false, stop_cb, &sp, &stopped, &cached));
    assert_true(cached);
    assert_int_equal(sp.calls, 0);
    assert_int_equal(stat(a, &s2), 0);
    assert_int_equal(s1.st_ino, s2.st_ino);
    assert_true(s1.st_mtim.tv_sec == s2.st_mtim.tv_sec && s1.st_mtim.tv_nsec == s2.st_mtim.tv_nsec);
    // another extraction into the same file needs restart
    fk_extract_opts o5 = {5, 32, 3, FK_STORE_GRID_FINE, FK_PRECISION_FP32, 0};
    assert_int_equal(fk_extract(&tiny, bytes_tok, text_path, &o5, b, false, NULL, NULL), FK_ERR_ARG);
    CHECK(fk_extract(&tiny, bytes_tok, text_path, &o5, b, true, NULL, NULL));
    fk_store *s;
    CHECK(fk_store_open(b, &s));
    assert_int_equal(fk_store_header_of(s)->k, 5);
    fk_store_close(s);
}

// An extraction in bf16 (emulated: every machine takes one path) says so in the store's flags,
// is not taken for the fp32 store at the same path (a different header: restart needed), keeps
// the fp32 store's top-1 at almost every position and its cross-entropies within bf16's error,
// and leaves the products in fp32 afterwards.
static void test_extract_precision(void **state) {
    (void)state;
    fk_extract_opts o = {10, 32, 3, FK_STORE_GRID_FINE, FK_PRECISION_FP32, 0};
    const char *a = tpath("p32.fkd"), *b = tpath("p16.fkd");
    CHECK(fk_extract(&tiny, bytes_tok, text_path, &o, a, true, NULL, NULL));
    fk_matmul_force_emulation(true);
    o.precision = FK_PRECISION_BF16;
    assert_int_equal(fk_extract(&tiny, bytes_tok, text_path, &o, a, false, NULL, NULL), FK_ERR_ARG);
    CHECK(fk_extract(&tiny, bytes_tok, text_path, &o, b, true, NULL, NULL));
    fk_matmul_force_emulation(false);
    assert_int_equal(fk_matmul_precision(), FK_PRECISION_FP32);
    o.precision = (fk_precision)7;
    assert_int_equal(fk_extract(&tiny, bytes_tok, text_path, &o, tpath("p7.fkd"), true, NULL, NULL), FK_ERR_ARG);
    // int8 on the CUDA engine (which multiplies in bf16) is refused, not ignored; on the CPU, a
    // model without quantized matrices is the fp32 store exactly (INT8's float products resolve
    // to fp32 under forced emulation), found at the same path, the INT8 flag not set
    o.precision = FK_PRECISION_INT8;
    o.device = FK_DEVICE_CUDA;
    assert_int_equal(fk_extract(&tiny, bytes_tok, text_path, &o, tpath("p8.fkd"), true, NULL, NULL), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "int8 runs on the CPU"));
    o.device = FK_DEVICE_CPU;
    fk_matmul_force_emulation(true);
    bool cached = false;
    CHECK(fk_extract_ex(&tiny, bytes_tok, text_path, &o, a, false, NULL, NULL, NULL, &cached));
    fk_matmul_force_emulation(false);
    assert_true(cached);
    fk_store *sa, *sb;
    CHECK(fk_store_open(a, &sa));
    CHECK(fk_store_open(b, &sb));
    assert_false(fk_store_header_of(sa)->flags & FK_STORE_BF16);
    assert_true(fk_store_header_of(sb)->flags & FK_STORE_BF16);
    fk_store_seq qa = {0}, qb = {0};
    int64_t positions = 0, same_top1 = 0;
    double worst_ce = 0, sum_ce = 0;
    for (int64_t c = 0; c < fk_store_n_seqs(sa); c++) {
        CHECK(fk_store_read_seq(sa, c, &qa));
        CHECK(fk_store_read_seq(sb, c, &qb));
        assert_int_equal(qa.n, qb.n);
        for (int64_t t = 0; t < qa.n; t++) {
            same_top1 += qa.ids[t * qa.k] == qb.ids[t * qb.k];
            double d = fabs(qa.ce[t] - qb.ce[t]);
            worst_ce = fmax(worst_ce, d);
            sum_ce += d;
            positions++;
        }
    }
    assert_true(positions > 100);
    if (!(same_top1 >= positions * 95 / 100 && worst_ce < 0.1 && sum_ce / (double)positions < 0.02 && sum_ce > 0))
        fail_msg("bf16 vs fp32 stores: top-1 equal at %lld of %lld positions, cross-entropy differs by %g at most, %g on average",
                 (long long)same_top1, (long long)positions, worst_ce, sum_ce / (double)positions);
    fk_store_seq_free(&qa);
    fk_store_seq_free(&qb);
    fk_store_close(sa);
    fk_store_close(sb);
}

// The stored top-k and cross-entropy are those of a direct forward over the same window.
// A source whose tokenizer adds BOS (a tiny Gemma 3 converted by llama.cpp, tests/data/gguf/gemma)
// sees BOS before each sequence: the stored cross-entropies are those of a forward over
// [BOS, tokens], not over the tokens alone (which differ here by more than the store's error).
static void test_extract_bos(void **state) {
    (void)state;
    fk_model g;
    fk_tokenizer *gt = NULL;
    CHECK(fk_model_load(FK_TEST_DATA "/gguf/gemma/gemma3/model.gguf", FK_LOAD_FROZEN, &g, &gt));
    assert_non_null(gt);
    assert_true(fk_tok_adds_bos(gt));
    int32_t bos = fk_tok_bos(gt);
    assert_true(bos >= 0);
    enum { T = 12 };
    fk_extract_opts o = {4, T, 2, FK_STORE_GRID_FINE, FK_PRECISION_FP32, 0};
    const char *a = tpath("bos.fkd");
    CHECK(fk_extract(&g, gt, text_path, &o, a, true, NULL, NULL));
    fk_store *s;
    CHECK(fk_store_open(a, &s));
    assert_true(fk_store_header_of(s)->flags & FK_STORE_BOS);
    const int32_t *ids = fk_store_token_ids(s);
    int64_t n_tok = fk_store_header_of(s)->n_tokens;
    fk_store_seq q = {0};
    int32_t x[T + 1], y[T + 1];
    double worst_bos = 0, worst_plain = 0;
    for (int64_t c = 0; c < fk_store_n_seqs(s) && c < 4; c++) {
        CHECK(fk_store_read_seq(s, c, &q));
        for (int with = 0; with < 2; with++) {  // 1: [BOS, tokens]; 0: the tokens alone
            int lead = with ? 1 : 0;
            if (lead) { x[0] = bos; y[0] = -1; }
            for (int t = 0; t < T; t++) {
                int64_t p = c * T + t;
                x[lead + t] = p < n_tok ? ids[p] : 0;
                y[lead + t] = p + 1 < n_tok ? ids[p + 1] : -1;
            }
            CHECK(fk_model_forward(&g, x, y, 1, T + lead, false, NULL));
            const float *tl = fk_model_token_losses(&g);
            for (int64_t t = 0; t < q.n; t++) {
                double d = fabs(q.ce[t] - tl[lead + t]);
                if (with) worst_bos = fmax(worst_bos, d);
                else worst_plain = fmax(worst_plain, d);
            }
        }
    }
    assert_true(worst_bos <= fk_store_ce_error_bound(s) + 1e-4);
    assert_true(worst_plain > fk_store_ce_error_bound(s) + 1e-4);
    fk_store_seq_free(&q);
    fk_store_close(s);
    fk_tok_free(gt);
    fk_model_free(&g);
}

static void test_extract_matches_forward(void **state) {
    (void)state;
    fk_extract_opts o = {10, 32, 3, FK_STORE_GRID_FINE, FK_PRECISION_FP32, 0};
    const char *a = tpath("m.fkd");
    CHECK(fk_extract(&tiny, bytes_tok, text_path, &o, a, false, NULL, NULL));
    fk_store *s;
    CHECK(fk_store_open(a, &s));
    const fk_store_header *h = fk_store_header_of(s);
    size_t n;
    char *text = slurp(text_path, &n);
    CHECK(fk_store_check(s, fk_model_fingerprint(&tiny), fk_tok_fingerprint(bytes_tok), fk_corpus_fingerprint(text, n)));
    fk_tok_out to = {0};
    CHECK(fk_tok_encode(bytes_tok, text, n, 0, &to));
    assert_int_equal(h->n_tokens, to.n);
    assert_int_equal(h->corpus_bytes, (int64_t)n);
    assert_memory_equal(fk_store_token_ids(s), to.ids, (size_t)to.n * sizeof(int32_t));
    for (int64_t i = 0; i < to.n; i++) assert_int_equal(fk_store_token_begin(s)[i], to.begin[i]);
    assert_int_equal(fk_store_token_begin(s)[to.n], (int64_t)n);
    const int T = 32, k = 10;
    int64_t V = tiny.cfg.vocab_size, positions = 0, compared = 0;
    int32_t x[32], y[32];
    fk_store_seq q = {0};
    for (int64_t c = 0; c < fk_store_n_seqs(s); c++) {
        CHECK(fk_store_read_seq(s, c, &q));
        for (int t = 0; t < T; t++) {
            int64_t p = c * T + t;
            x[t] = p < to.n ? to.ids[p] : 0;
            y[t] = p + 1 < to.n ? to.ids[p + 1] : -1;
        }
        float loss;
        CHECK(fk_model_forward(&tiny, x, y, 1, T, false, &loss));
        const float *lg = fk_model_logits(&tiny), *tl = fk_model_token_losses(&tiny);
        for (int64_t t = 0; t < q.n; t++) {
            const float *z = lg + t * V;
            double mx = z[0], se = 0;
            for (int64_t v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
            for (int64_t v = 0; v < V; v++) se += exp(z[v] - mx);
            double lse = mx + log(se);
            assert_int_equal(q.count[t], k);
            for (int j = 0; j < k; j++) {
                int32_t id = q.ids[t * k + j];
                // ids: in order of the direct logits, except within float noise of a tie
                if (j > 0) assert_true(z[id] <= z[q.ids[t * k + j - 1]] + 1e-4f);
                double off = (double)z[q.ids[t * k]] - z[id];
                if (fabs(q.logp[t * k + j] - (z[id] - lse)) > fk_store_logp_error_bound(s, off) + 1e-4)
                    fail_msg("sequence %lld position %lld entry %d: stored %g, direct %g", (long long)c, (long long)t, j, q.logp[t * k + j], z[id] - lse);
            }
            int32_t worst_kept = q.ids[t * k + k - 1];  // nothing outside the entries beats the last one
            int outside = 0;
            for (int64_t v = 0; v < V; v++) outside += z[v] > z[worst_kept] + 1e-4f;
            assert_true(outside <= k - 1);
            int64_t best = 0;
            for (int64_t v = 1; v < V; v++) if (z[v] > z[best]) best = v;
            if (z[best] > z[q.ids[t * k]] + 1e-4f) fail_msg("position %lld: stored top-1 %d, direct %lld", (long long)(c * T + t), q.ids[t * k], (long long)best);
            compared += q.ids[t * k] == best;
            if (fabs(q.ce[t] - tl[t]) > fk_store_ce_error_bound(s) + 1e-4)
                fail_msg("position %lld: stored ce %g, direct %g", (long long)(c * T + t), q.ce[t], tl[t]);
            positions++;
        }
    }
    assert_int_equal(positions, to.n - 1);
    assert_true(compared > positions * 9 / 10);
    fk_store_seq_free(&q);
    fk_tok_out_free(&to);
    free(text);
    fk_store_close(s);
}

int main(void) {
    const struct CMUnitTest store_tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_roundtrip_aligned),
        cmocka_unit_test(test_kl_bound),
        cmocka_unit_test(test_compact_grid),
        cmocka_unit_test(test_old_stores_unchanged),
        cmocka_unit_test(test_fingerprints),
        cmocka_unit_test(test_truncated_and_corrupt),
        cmocka_unit_test(test_torn_partial),
    };
    const struct CMUnitTest extract_tests[] = {
        cmocka_unit_test(test_extract_resume),
        cmocka_unit_test(test_extract_matches_forward),
        cmocka_unit_test(test_extract_bos),
        cmocka_unit_test(test_extract_precision),
    };
    int failed = cmocka_run_group_tests_name("store", store_tests, tmpdir_setup, tmpdir_teardown);
    failed += cmocka_run_group_tests_name("extract", extract_tests, extract_setup, extract_teardown);
    return failed;
}
