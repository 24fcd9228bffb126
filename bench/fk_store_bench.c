// Distribution store benchmark on a real model: extraction throughput against plain inference
// (fk_eval_data on the same tokens, same seq and batch, in the same run), bytes per position
// by section, and the KL divergence the quantisation introduces (fusekit/store.h says how it
// is measured). Prints JSON lines; never passes or fails on time.
// Both quantisation presets (fine, compact) are extracted in every round, alternated with plain
// inference, and measured.
// usage: fk_store_bench --model DIR --data TEXT [-k 10] [--seq N] [--batch 4] [--max-bytes N]
//                       [--repeat 2] [--out FILE.fkd]   (the compact store: FILE.fkd.compact.fkd)
#include "fusekit/fusekit.h"
#include "fusekit/store.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int die(const char *what) {
    fprintf(stderr, "fk_store_bench: %s: %s\n", what, fk_last_error());
    return 1;
}

static uint64_t rd64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

typedef struct { double loop_s; } cb_state;
static bool on_progress(const fk_extract_progress *p, void *user) {
    ((cb_state *)user)->loop_s = p->elapsed_s;
    return true;
}

// Exact top-k of the log-softmax (double precision), largest first, ties to the lower id.
static void exact_topk(const float *z, int64_t V, int k, int32_t *ids, float *logp, double *lse_out) {
    double mx = z[0];
    for (int64_t v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
    double s = 0;
    for (int64_t v = 0; v < V; v++) s += exp((double)z[v] - mx);
    double lse = mx + log(s);
    int n = 0;
    for (int64_t v = 0; v < V; v++) {
        if (n == k && !(z[v] > z[ids[k - 1]])) continue;
        int j = n < k ? n++ : k - 1;
        while (j > 0 && z[ids[j - 1]] < z[v]) { ids[j] = ids[j - 1]; j--; }
        ids[j] = (int32_t)v;
    }
    for (int j = 0; j < n; j++) logp[j] = (float)((double)z[ids[j]] - lse);
    *lse_out = lse;
}

// Size by section, decode speed and the quantisation error of the store at store_path (preset
// `grid`) against an independent double-precision top-k of the same forward.
static int measure_store(const char *store_path, const char *grid, fk_model *m, const fk_token_data *d, int k, int seq) {
    // ---- size, by section (offsets from the documented header and footer)
    fk_store *s;
    if (fk_store_open(store_path, &s) != FK_OK) return die(store_path);
    {
        char *raw;
        size_t n;
        if (fk_read_file(store_path, &raw, &n) != FK_OK) return die(store_path);
        const uint8_t *b = (const uint8_t *)raw;
        uint64_t tok_bytes = rd64(b + 88), index_off = rd64(b + n - 32);
        double pos = (double)fk_store_header_positions(fk_store_header_of(s));
        printf("{\"bench\":\"size\",\"grid\":\"%s\",\"bytes\":%zu,\"bytes_per_position\":%.4f,\"header_per_position\":%.5f,\"tokenization_per_position\":%.4f,"
               "\"records_per_position\":%.4f,\"index_per_position\":%.5f,\"tokens\":%lld}\n",
               grid, n, (double)n / pos, 128 / pos, (double)tok_bytes / pos, (double)(index_off - 128 - tok_bytes) / pos,
               (double)(n - index_off) / pos, (long long)d->n);
        free(raw);
    }

    // ---- decode speed
    fk_store_seq q = {0};
    double t0 = fk_time_s();
    for (int64_t c = 0; c < fk_store_n_seqs(s); c++)
        if (fk_store_read_seq(s, c, &q) != FK_OK) return die("read");
    double dec_s = fk_time_s() - t0;
    printf("{\"bench\":\"decode\",\"grid\":\"%s\",\"positions_per_s\":%.1f}\n", grid, (double)(d->n - 1) / dec_s);

    // ---- quantisation error against an independent double-precision top-k of the same forward
    int64_t V = m->cfg.vocab_size, n_pos = 0, hits = 0, top1_same = 0, ids_same = 0;
    double kl_sum = 0, kl_max = 0, ce_err_max = 0, lp_err_max = 0, lp_err_over_bound = 0, dce_sum = 0;
    int32_t *x = malloc((size_t)seq * sizeof(int32_t));
    fk_store_seq p = {0};
    fk_store_seq_reserve(&p, seq, k);
    double *kl = malloc((size_t)seq * sizeof(double));
    const int32_t *ids = fk_store_token_ids(s);
    for (int64_t c = 0; c < fk_store_n_seqs(s); c++) {
        if (fk_store_read_seq(s, c, &q) != FK_OK) return die("read");
        int64_t off = c * seq;
        for (int i = 0; i < seq; i++) x[i] = off + i < d->n ? ids[off + i] : 0;
        if (fk_model_forward(m, x, NULL, 1, seq, false, NULL) != FK_OK) return die("forward");
        const float *lg = fk_model_logits(m);
        p.first = q.first;
        p.n = q.n;
        for (int64_t t = 0; t < q.n; t++) {
            double lse;
            exact_topk(lg + t * V, V, k, p.ids + t * k, p.logp + t * k, &lse);
            p.count[t] = (uint8_t)(k < V ? k : V);
            int32_t y = ids[off + t + 1];
            double ce = lse - lg[t * V + y];
            double e = fabs(ce - q.ce[t]);
            ce_err_max = e > ce_err_max ? e : ce_err_max;
            dce_sum += q.ce[t] - ce;
            bool same = q.count[t] == p.count[t];
            for (int j = 0; same && j < p.count[t]; j++) same = q.ids[t * k + j] == p.ids[t * k + j];
            ids_same += same;
            top1_same += q.ids[t * k] == p.ids[t * k];
            for (int j = 0; j < p.count[t]; j++) {
                if (p.ids[t * k + j] == y) hits++;
                if (same) {
                    double err = fabs((double)q.logp[t * k + j] - p.logp[t * k + j]);
                    double bound = fk_store_logp_error_bound(s, (double)p.logp[t * k] - p.logp[t * k + j]);
                    lp_err_max = err > lp_err_max ? err : lp_err_max;
                    lp_err_over_bound = err / bound > lp_err_over_bound ? err / bound : lp_err_over_bound;
                }
            }
        }
        fk_store_seq_kl(&p, &q, kl);
        for (int64_t t = 0; t < q.n; t++) {
            kl_sum += kl[t];
            kl_max = kl[t] > kl_max ? kl[t] : kl_max;
        }
        n_pos += q.n;
    }
    printf("{\"bench\":\"quantisation\",\"grid\":\"%s\",\"positions\":%lld,\"kl_mean\":%.3e,\"kl_max\":%.3e,\"logp_err_max\":%.4f,"
           "\"logp_err_max_over_bound\":%.3f,\"ce_err_max\":%.5f,\"ce_bias\":%.2e,\"same_ids\":%.5f,\"same_top1\":%.5f,\"label_in_topk\":%.4f}\n",
           grid, (long long)n_pos, kl_sum / (double)n_pos, kl_max, lp_err_max, lp_err_over_bound, ce_err_max, dce_sum / (double)n_pos,
           (double)ids_same / (double)n_pos, (double)top1_same / (double)n_pos, (double)hits / (double)n_pos);
    free(x); free(kl);
    fk_store_seq_free(&p);
    fk_store_seq_free(&q);
    fk_store_close(s);
    return 0;
}

int main(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *out = NULL;
    int k = 10, seq = 0, batch = 4, repeat = 2;
    long long max_bytes = 0;
    for (int i = 1; i < argc; i += 2) {  // --flag value pairs
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "fk_store_bench: %s needs a value\n", a); return 2; }
        if (strcmp(a, "--model") == 0) model = v;
        else if (strcmp(a, "--data") == 0) data = v;
        else if (strcmp(a, "--out") == 0) out = v;
        else if (strcmp(a, "-k") == 0) k = atoi(v);
        else if (strcmp(a, "--seq") == 0) seq = atoi(v);
        else if (strcmp(a, "--batch") == 0) batch = atoi(v);
        else if (strcmp(a, "--repeat") == 0) repeat = atoi(v);
        else if (strcmp(a, "--max-bytes") == 0) max_bytes = atoll(v);
        else { fprintf(stderr, "usage: fk_store_bench --model DIR --data TEXT [-k 10] [--seq N] [--batch 4] [--max-bytes N] [--repeat 2] [--out FILE]\n"); return 2; }
    }
    if (!model || !data) { fprintf(stderr, "usage: fk_store_bench --model DIR --data TEXT [options]\n"); return 2; }
    fk_model m;
    if (fk_hf_load(&m, model) != FK_OK) return die(model);
    fk_tokenizer *tok = NULL;
    char *tj = fk_path_join(model, "tokenizer.json");
    fk_status st = fk_path_exists(tj) ? fk_tok_load_json(tj, &tok) : fk_tok_new_bytes(&tok);
    free(tj);
    if (st != FK_OK) return die("tokenizer");
    if (seq <= 0) seq = (int)(m.cfg.max_seq < 512 ? m.cfg.max_seq : 512);
    char text_path[256], store_path[256];
    snprintf(text_path, sizeof text_path, "/tmp/fk_store_bench_%d.txt", (int)getpid());
    snprintf(store_path, sizeof store_path, "%s", out ? out : "/tmp/fk_store_bench.fkd");
    {   // the text, cut to --max-bytes
        char *buf;
        size_t n;
        if (fk_read_file(data, &buf, &n) != FK_OK) return die(data);
        if (max_bytes > 0 && (size_t)max_bytes < n) n = (size_t)max_bytes;
        if (fk_write_file_atomic(text_path, buf, n) != FK_OK) return die(text_path);
        free(buf);
    }
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif

    // ---- plain inference and extraction, alternating, best of `repeat`
    fk_token_data d;
    if (fk_data_load_tok(text_path, tok, &d) != FK_OK) return die("data");
    double best_inf = 0, best_inf_total = 0, best_ext[2] = {0}, best_ext_total[2] = {0};
    const char *grid_name[2] = {"fine", "compact"};
    char paths[2][300];
    for (int g = 0; g < 2; g++) snprintf(paths[g], sizeof paths[g], "%s%s", store_path, g ? ".compact.fkd" : "");
    for (int r = 0; r < repeat; r++) {
        double t0 = fk_time_s();
        fk_token_data d2;
        if (fk_data_load_tok(text_path, tok, &d2) != FK_OK) return die("data");
        double t1 = fk_time_s();
        fk_eval_result er;
        if (fk_eval_data(&m, &d2, seq, batch, 0, &er) != FK_OK) return die("eval");
        double t2 = fk_time_s();
        fk_data_free(&d2);
        double inf = (double)er.tokens / (t2 - t1), inf_total = (double)er.tokens / (t2 - t0);
        best_inf = inf > best_inf ? inf : best_inf;
        best_inf_total = inf_total > best_inf_total ? inf_total : best_inf_total;
        for (int g = 0; g < 2; g++) {  // both presets, alternated with inference in every round
            fk_extract_opts o = {k, seq, batch, g ? FK_STORE_GRID_COMPACT : FK_STORE_GRID_FINE, FK_PRECISION_FP32, 0};
            unlink(paths[g]);
            cb_state cs = {0};
            t0 = fk_time_s();
            if (fk_extract(&m, tok, text_path, &o, paths[g], true, on_progress, &cs) != FK_OK) return die("extract");
            t1 = fk_time_s();
            double pos = (double)(d.n - 1);
            double ext = pos / cs.loop_s, ext_total = pos / (t1 - t0);
            best_ext[g] = ext > best_ext[g] ? ext : best_ext[g];
            best_ext_total[g] = ext_total > best_ext_total[g] ? ext_total : best_ext_total[g];
        }
    }
    for (int g = 0; g < 2; g++)
        printf("{\"bench\":\"extract\",\"grid\":\"%s\",\"model\":\"%s\",\"vocab\":%lld,\"threads\":%d,\"k\":%d,\"seq\":%d,\"batch\":%d,\"positions\":%lld,"
               "\"inference_tokens_per_s\":%.1f,\"extract_positions_per_s\":%.1f,\"ratio\":%.3f,"
               "\"inference_with_load_tokens_per_s\":%.1f,\"extract_with_load_positions_per_s\":%.1f,\"ratio_with_load\":%.3f}\n",
               grid_name[g], model, (long long)m.cfg.vocab_size, threads, k, seq, batch, (long long)(d.n - 1), best_inf, best_ext[g],
               best_ext[g] / best_inf, best_inf_total, best_ext_total[g], best_ext_total[g] / best_inf_total);
    for (int g = 0; g < 2; g++)
        if (measure_store(paths[g], grid_name[g], &m, &d, k, seq) != 0) return 1;
    fk_data_free(&d);
    fk_tok_free(tok);
    fk_model_free(&m);
    unlink(text_path);
    for (int g = 0; g < 2; g++)
        if (!out) unlink(paths[g]);
    return 0;
}
