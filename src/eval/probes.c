// Multiple-choice probes scored by log-likelihood (fusekit/probes.h states the rule).
#include "fusekit/probes.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/rowops.h"

typedef struct {
    const char *domain;  // "" when absent
    const char *context;
    const char *choice[FK_PROBES_MAX_CHOICES];
    int n_choices, answer;
} item;

// Reads one JSON line into it (strings point into j). Errors name path and line.
static fk_status parse_item(const cJSON *j, const char *path, int64_t line, item *it) {
    if (!cJSON_IsObject(j)) return fk_error(FK_ERR_FORMAT, "%s:%lld: not a JSON object", path, (long long)line);
    const cJSON *dom = cJSON_GetObjectItemCaseSensitive(j, "domain");
    const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(j, "context");
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(j, "choices");
    const cJSON *ans = cJSON_GetObjectItemCaseSensitive(j, "answer");
    if (dom && !cJSON_IsString(dom)) return fk_error(FK_ERR_FORMAT, "%s:%lld: \"domain\" must be a string", path, (long long)line);
    if (!cJSON_IsString(ctx)) return fk_error(FK_ERR_FORMAT, "%s:%lld: missing string \"context\"", path, (long long)line);
    int n = cJSON_IsArray(ch) ? cJSON_GetArraySize(ch) : 0;
    if (n < 2 || n > FK_PROBES_MAX_CHOICES)
        return fk_error(FK_ERR_FORMAT, "%s:%lld: \"choices\" must be an array of 2 to %d strings", path, (long long)line,
                        FK_PROBES_MAX_CHOICES);
    it->domain = dom ? dom->valuestring : "";
    it->context = ctx->valuestring;
    it->n_choices = n;
    for (int k = 0; k < n; k++) {
        const cJSON *c = cJSON_GetArrayItem(ch, k);
        if (!cJSON_IsString(c)) return fk_error(FK_ERR_FORMAT, "%s:%lld: choice %d is not a string", path, (long long)line, k);
        if (!*c->valuestring) return fk_error(FK_ERR_FORMAT, "%s:%lld: choice %d is empty", path, (long long)line, k);
        it->choice[k] = c->valuestring;
    }
    if (!cJSON_IsNumber(ans) || ans->valuedouble != floor(ans->valuedouble))
        return fk_error(FK_ERR_FORMAT, "%s:%lld: missing integer \"answer\"", path, (long long)line);
    if (ans->valuedouble < 0 || ans->valuedouble >= n)
        return fk_error(FK_ERR_FORMAT, "%s:%lld: answer %g is out of range for %d choices", path, (long long)line,
                        ans->valuedouble, n);
    it->answer = (int)ans->valuedouble;
    return FK_OK;
}

// Scores an item's choices into score[0..n_choices). enc holds FK_PROBES_MAX_CHOICES
// reusable encode outputs; x is a growable (B, T) token buffer.
static fk_status score_item(fk_model *m, const fk_tokenizer *tok, const item *it, const char *path, int64_t line,
                            fk_tok_out *enc, int32_t **x, size_t *x_cap, double *score) {
    const int64_t V = m->cfg.vocab_size, max_seq = m->cfg.max_seq;
    size_t ctx_len = strlen(it->context);
    int64_t first[FK_PROBES_MAX_CHOICES], start[FK_PROBES_MAX_CHOICES], T = 1;
    for (int k = 0; k < it->n_choices; k++) {
        size_t cl = strlen(it->choice[k]);
        char *full = malloc(ctx_len + cl + 1);
        if (!full) return fk_error(FK_ERR_NOMEM, "out of memory");
        memcpy(full, it->context, ctx_len);
        memcpy(full + ctx_len, it->choice[k], cl + 1);
        fk_tok_out *o = &enc[k];
        fk_tok_out_clear(o);
        // after BOS when the tokenizer adds one (Llama 2, Gemma), as the model was trained to see text
        fk_status st = fk_tok_adds_bos(tok) ? fk_tok_out_push(o, fk_tok_bos(tok), 0, 0) : FK_OK;
        if (st == FK_OK) st = fk_tok_encode(tok, full, ctx_len + cl, 0, o);
        free(full);
        if (st != FK_OK) return fk_error_context(st, "%s:%lld", path, (long long)line);
        int64_t j = 0;
        while (j < o->n && o->end[j] <= (int64_t)ctx_len) j++;
        if (j == 0)
            return fk_error(FK_ERR_FORMAT, "%s:%lld: the context is empty or merges with choice %d into the first token: "
                            "nothing predicts the choice", path, (long long)line, k);
        for (int64_t t = 0; t < o->n; t++)
            if (o->ids[t] < 0 || o->ids[t] >= V)
                return fk_error(FK_ERR_ARG, "%s:%lld: token %d is outside the model's vocabulary (size %lld)", path,
                                (long long)line, o->ids[t], (long long)V);
        // Inputs are tokens [start, n-1); the first scored token needs its predecessor inside.
        int64_t s = o->n - 1 > max_seq ? o->n - 1 - max_seq : 0;
        if (j - 1 < s)
            return fk_error(FK_ERR_ARG, "%s:%lld: choice %d takes %lld tokens, more than the model's context %lld allows",
                            path, (long long)line, k, (long long)(o->n - j), (long long)max_seq);
        first[k] = j;
        start[k] = s;
        if (o->n - 1 - s > T) T = o->n - 1 - s;
    }
    int B = it->n_choices;
    if (B < 2 || B > FK_PROBES_MAX_CHOICES || T < 1 || T > max_seq) return fk_error(FK_ERR_ARG, "probe item shape %d x %lld", B, (long long)T);
    size_t need = (size_t)B * (size_t)T;
    if (need > *x_cap) {
        int32_t *nx = realloc(*x, need * sizeof(int32_t));
        if (!nx) return fk_error(FK_ERR_NOMEM, "out of memory");
        *x = nx;
        *x_cap = need;
    }
    // Rows are padded at the end: a causal model's earlier positions never see the padding.
    for (int k = 0; k < B; k++) {
        const fk_tok_out *o = &enc[k];
        int64_t L = o->n - 1 - start[k];
        for (int64_t t = 0; t < T; t++) (*x)[k * T + t] = t < L ? o->ids[start[k] + t] : 0;
    }
    float loss;
    FK_TRY(fk_model_forward(m, *x, NULL, B, (int)T, false, &loss));
    const float *logits = fk_model_logits(m);
    for (int k = 0; k < B; k++) {
        const fk_tok_out *o = &enc[k];
        double sum = 0;
        for (int64_t t = first[k]; t < o->n; t++) {
            const float *z = logits + ((int64_t)k * T + (t - 1 - start[k])) * V;
            float mx = fk_row_max_exact(z, V);
            sum += (double)z[o->ids[t]] - mx - log(fk_row_sumexp_exact(z, V, mx));  // its log-probability
        }
        score[k] = sum;
    }
    return FK_OK;
}

// The index of a domain's counters, added on first sight ("other" once the table is full).
static int domain_slot(fk_probe_result *r, const char *name) {
    for (int d = 0; d < r->n_domains; d++)
        if (strncmp(r->domain[d].name, name, sizeof r->domain[d].name - 1) == 0) return d;
    if (r->n_domains == FK_PROBES_MAX_DOMAINS) name = "other";
    for (int d = 0; d < r->n_domains; d++)
        if (strcmp(r->domain[d].name, name) == 0) return d;
    int d = r->n_domains < FK_PROBES_MAX_DOMAINS ? r->n_domains++ : FK_PROBES_MAX_DOMAINS - 1;
    snprintf(r->domain[d].name, sizeof r->domain[d].name, "%s", name);
    return d;
}

// Makes room for one more item and its n scores.
static fk_status result_grow(fk_probe_result *r, int64_t *cap, int64_t *score_cap, int n) {
    if (r->items + 1 > *cap) {
        int64_t c = *cap ? *cap * 2 : 256;
        int32_t *p = realloc(r->pred, (size_t)c * sizeof *p);
        if (p) r->pred = p;
        int32_t *a = realloc(r->answer, (size_t)c * sizeof *a);
        if (a) r->answer = a;
        int64_t *o = realloc(r->score_off, (size_t)(c + 1) * sizeof *o);
        if (o) r->score_off = o;
        if (!p || !a || !o) return fk_error(FK_ERR_NOMEM, "out of memory");
        *cap = c;
    }
    int64_t used = r->score_off[r->items];
    if (used + n > *score_cap) {
        int64_t c = *score_cap ? *score_cap * 2 : 1024;
        while (c < used + n) c *= 2;
        double *s = realloc(r->score, (size_t)c * sizeof *s);
        if (!s) return fk_error(FK_ERR_NOMEM, "out of memory");
        r->score = s;
        *score_cap = c;
    }
    return FK_OK;
}

fk_status fk_probes_eval(fk_model *m, const fk_tokenizer *tok, const char *path, int64_t max_items, fk_probe_result *r) {
    memset(r, 0, sizeof *r);
    fk_tokenizer *bytes = NULL;
    if (!tok) {
        FK_TRY(fk_tok_new_bytes(&bytes));
        tok = bytes;
    }
    char *text = NULL;
    size_t len = 0;
    fk_status st = fk_read_file(path, &text, &len);
    fk_tok_out enc[FK_PROBES_MAX_CHOICES];
    memset(enc, 0, sizeof enc);
    int32_t *x = NULL;
    size_t x_cap = 0;
    int64_t cap = 0, score_cap = 0, line = 0;
    if (st == FK_OK) {
        r->score_off = calloc(1, sizeof(int64_t));
        if (!r->score_off) st = fk_error(FK_ERR_NOMEM, "out of memory");
    }
    for (size_t pos = 0; st == FK_OK && pos < len && (max_items <= 0 || r->items < max_items);) {
        const char *s = text + pos, *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl ? 1 : 0);
        line++;
        size_t k = 0;
        while (k < n && (s[k] == ' ' || s[k] == '\t' || s[k] == '\r')) k++;
        if (k == n) continue;
        cJSON *j = cJSON_ParseWithLength(s, n);
        if (!j) { st = fk_error(FK_ERR_FORMAT, "%s:%lld: malformed JSON", path, (long long)line); break; }
        item it;
        memset(&it, 0, sizeof it);
        st = parse_item(j, path, line, &it);
        if (st == FK_OK) st = result_grow(r, &cap, &score_cap, it.n_choices);
        if (st == FK_OK) {
            double *sc = r->score + r->score_off[r->items];
            st = score_item(m, tok, &it, path, line, enc, &x, &x_cap, sc);
            if (st == FK_OK) {
                int best = 0;
                for (int c = 1; c < it.n_choices; c++) if (sc[c] > sc[best]) best = c;
                int d = domain_slot(r, it.domain);
                r->pred[r->items] = best;
                r->answer[r->items] = it.answer;
                r->score_off[r->items + 1] = r->score_off[r->items] + it.n_choices;
                r->items++;
                r->domain[d].items++;
                if (best == it.answer) { r->correct++; r->domain[d].correct++; }
            }
        }
        cJSON_Delete(j);
    }
    if (st == FK_OK && r->items == 0) st = fk_error(FK_ERR_FORMAT, "%s holds no probe items", path);
    if (st == FK_OK) r->accuracy = (double)r->correct / (double)r->items;
    for (int k = 0; k < FK_PROBES_MAX_CHOICES; k++) fk_tok_out_free(&enc[k]);
    free(x);
    free(text);
    fk_tok_free(bytes);
    if (st != FK_OK) fk_probe_result_free(r);
    return st;
}

void fk_probe_result_free(fk_probe_result *r) {
    free(r->pred);
    free(r->answer);
    free(r->score_off);
    free(r->score);
    r->pred = r->answer = NULL;
    r->score_off = NULL;
    r->score = NULL;
}

void fk_probe_result_add(fk_probe_result *total, const fk_probe_result *r) {
    total->items += r->items;
    total->correct += r->correct;
    total->accuracy = total->items ? (double)total->correct / (double)total->items : 0;
    for (int d = 0; d < r->n_domains && d < FK_PROBES_MAX_DOMAINS; d++) {
        int k = domain_slot(total, r->domain[d].name);
        total->domain[k].items += r->domain[d].items;
        total->domain[k].correct += r->domain[d].correct;
    }
}
