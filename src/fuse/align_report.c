// The alignment report (fusekit/fusion.h, docs/fusion.md "Alignment report"): how a source's
// tokens and vocabulary fit the target's on a text, computed with the code fused training
// uses (fk_align_tokens, the vocabulary map), and written as align_report.json / .html.
#include "fusekit/fusion.h"
#include "fusekit/html.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

void fk_align_report_free(fk_align_report *r) {
    if (!r) return;
    free(r->mismatch);
    memset(r, 0, sizeof *r);
}

// ---------------------------------------------------------------- computing

// The tokens of text under t, with their spans (seq points into *o and *begin).
static fk_status encode_seq(const fk_tokenizer *t, const char *text, size_t len, const char *who, fk_tok_out *o, fk_tokseq *seq,
                            int64_t **begin) {
    fk_status st = fk_tok_encode(t, text, len, 0, o);
    if (st == FK_OK) st = fk_tokseq_from_out(o, seq, begin);
    return st == FK_OK ? st : fk_error_context(st, "encoding the text with the %s tokenizer", who);
}

// Target tokens by how they align (fusion.h: one to one, one to many, many to one, none).
static void count_alignment(const fk_alignment *a, fk_align_report *r) {
    for (int64_t j = 0; j < a->n; j++) {
        int64_t w = a->hi[j] - a->lo[j];
        if (a->one_to_one[j]) r->one_to_one++;
        else if (w > 1) r->one_to_many++;
        else if (w == 1) r->many_to_one++;
        else r->unaligned++;
    }
}

// The class of each source id under map (fusion.h's FK_MAP_*).
static fk_status classify_ids(const fk_tokenizer *src, const fk_tokenizer *tgt, const int32_t *map, uint8_t *cls) {
    int32_t n = fk_tok_vocab_size(src);
    size_t cap = 256;
    char *a = malloc(cap), *b = malloc(cap);
    fk_status st = a && b ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    for (int32_t v = 0; v < n && st == FK_OK; v++) {
        if (map[v] < 0) { cls[v] = FK_MAP_UNMAPPED; continue; }
        size_t na = 0, nb = 0;
        // a token longer than the buffers: grow them and read it again
        while (st == FK_OK && ((na = fk_tok_token_bytes(src, v, a, cap)) > cap || (nb = fk_tok_token_bytes(tgt, map[v], b, cap)) > cap)) {
            cap = 2 * (na > cap ? na : nb);
            char *ga = realloc(a, cap), *gb = ga ? realloc(b, cap) : NULL;
            if (ga) a = ga;
            if (gb) b = gb;
            if (!ga || !gb) st = fk_error(FK_ERR_NOMEM, "out of memory");
        }
        if (st != FK_OK) break;
        bool special = v == fk_tok_bos(src) || v == fk_tok_eos(src) || (fk_tok_type(src, v) == FK_TT_UNKNOWN);
        cls[v] = na == nb && memcmp(a, b, na) == 0 ? FK_MAP_EXACT : special ? FK_MAP_SPECIAL : FK_MAP_FALLBACK;
    }
    free(a);
    free(b);
    return st;
}

static int by_count(const void *pa, const void *pb) {
    const fk_align_mismatch *a = pa, *b = pb;
    if (a->count != b->count) return a->count > b->count ? -1 : 1;
    return (a->src > b->src) - (a->src < b->src);
}

// The vocabulary figures: classes by id and by token on the text, and the top mismatches.
static fk_status count_vocab(const fk_tokenizer *src, const fk_tokenizer *tgt, const int32_t *map, const fk_tokseq *ss, int top,
                             fk_align_report *r) {
    int32_t n = r->src_vocab;
    uint8_t *cls = malloc((size_t)n + 1);
    int64_t *cnt = calloc((size_t)n + 1, sizeof *cnt);
    fk_status st = cls && cnt ? classify_ids(src, tgt, map, cls) : fk_error(FK_ERR_NOMEM, "out of memory for %d source ids", n);
    for (int64_t i = 0; i < ss->n && st == FK_OK; i++) cnt[ss->ids[i]]++;
    int64_t cand = 0;
    for (int32_t v = 0; v < n && st == FK_OK; v++) {
        r->vocab[cls[v]]++;
        r->text[cls[v]] += cnt[v];
        cand += cnt[v] > 0 && (cls[v] == FK_MAP_FALLBACK || cls[v] == FK_MAP_UNMAPPED);
    }
    fk_align_mismatch *all = st == FK_OK ? malloc(sizeof *all * (size_t)(cand + 1)) : NULL;
    if (st == FK_OK && !all) st = fk_error(FK_ERR_NOMEM, "out of memory");
    int64_t k = 0;
    for (int32_t v = 0; v < n && st == FK_OK; v++)
        if (cnt[v] > 0 && (cls[v] == FK_MAP_FALLBACK || cls[v] == FK_MAP_UNMAPPED)) all[k++] = (fk_align_mismatch){cnt[v], v, map[v]};
    if (st == FK_OK) {
        qsort(all, (size_t)k, sizeof *all, by_count);
        r->n_mismatch = k < top ? (int)k : top;
        r->mismatch = all;
        all = NULL;
    }
    free(all);
    free(cls);
    free(cnt);
    return st;
}

fk_status fk_align_report_compute(const fk_tokenizer *src, const fk_tokenizer *tgt, const char *text, size_t len,
                                  const fk_align_opts *o, int top, fk_align_report *r) {
    memset(r, 0, sizeof *r);
    if (len == 0) return fk_error(FK_ERR_ARG, "the text is empty: an alignment report needs text to tokenize");
    if (top < 0) return fk_error(FK_ERR_ARG, "the number of mismatches to report must be >= 0 (got %d)", top);
    fk_tok_out so = {0}, to = {0};
    fk_tokseq ss, ts;
    int64_t *sb = NULL, *tb = NULL;
    int32_t *map = NULL;
    fk_alignment al = {0};
    fk_status st = encode_seq(src, text, len, "source", &so, &ss, &sb);
    if (st == FK_OK) st = encode_seq(tgt, text, len, "target", &to, &ts, &tb);
    if (st == FK_OK)
        st = o->cache_dir ? fk_vmap_load_or_build(src, tgt, o->vmap, o->cache_dir, &map) : fk_vmap_build(src, tgt, o->vmap, &map);
    if (st == FK_OK) st = fk_align_tokens(src, &ss, tgt, &ts, o->mode, map, &al);
    if (st == FK_OK) {
        r->bytes = (int64_t)len;
        r->src_tokens = ss.n;
        r->tgt_tokens = ts.n;
        r->src_vocab = fk_tok_vocab_size(src);
        r->tgt_vocab = fk_tok_vocab_size(tgt);
        count_alignment(&al, r);
        st = count_vocab(src, tgt, map, &ss, top, r);
    }
    fk_alignment_free(&al);
    free(map);
    free(sb);
    free(tb);
    fk_tok_out_free(&so);
    fk_tok_out_free(&to);
    if (st != FK_OK) fk_align_report_free(r);
    return st;
}

// ---------------------------------------------------------------- text

// The length of the valid UTF-8 sequence of 2-4 bytes starting p (at most n bytes), or 0.
static size_t utf8_len(const unsigned char *p, size_t n) {
    size_t k = p[0] >= 0xF0 && p[0] <= 0xF4 ? 4 : p[0] >= 0xE0 ? 3 : p[0] >= 0xC2 && p[0] < 0xE0 ? 2 : 0;
    if (p[0] >= 0xF5 || k == 0 || k > n) return 0;
    for (size_t i = 1; i < k; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    if ((k == 3 && p[0] == 0xE0 && p[1] < 0xA0) || (k == 4 && p[0] == 0xF0 && p[1] < 0x90) || (k == 4 && p[0] == 0xF4 && p[1] >= 0x90) ||
        (k == 3 && p[0] == 0xED && p[1] >= 0xA0))
        return 0;  // overlong, beyond U+10FFFF, or a surrogate
    return k;
}

char *fk_align_token_text(const fk_tokenizer *t, int32_t id, char *buf, size_t cap) {
    unsigned char raw[256];
    size_t n = fk_tok_token_bytes(t, id, (char *)raw, sizeof raw), o = 0;
    bool cut = n > sizeof raw;
    if (cut) n = sizeof raw;
    for (size_t i = 0; i < n;) {
        char e[8];
        size_t k = utf8_len(raw + i, n - i), m;
        const char *s = e;
        if (k) { s = (const char *)raw + i; m = k; }
        else {
            unsigned c = raw[i];
            k = 1;
            if (c == '\n') m = (size_t)snprintf(e, sizeof e, "\\n");
            else if (c == '\t') m = (size_t)snprintf(e, sizeof e, "\\t");
            else if (c == '\r') m = (size_t)snprintf(e, sizeof e, "\\r");
            else if (c == '\\') m = (size_t)snprintf(e, sizeof e, "\\\\");
            else if (c >= 0x20 && c < 0x7F) { e[0] = (char)c; m = 1; }
            else m = (size_t)snprintf(e, sizeof e, "\\x%02X", c);
        }
        if (o + m + 4 > cap) { cut = true; break; }
        memcpy(buf + o, s, m);
        o += m;
        i += k;
    }
    if (cut && o + 4 <= cap) { memcpy(buf + o, "...", 3); o += 3; }
    buf[o < cap ? o : cap - 1] = 0;
    return buf;
}

static double share(int64_t a, int64_t b) { return b > 0 ? (double)a / (double)b : 0; }

void fk_align_report_line(const fk_align_report *r, char *buf, size_t cap) {
    int64_t T = r->tgt_tokens, S = r->src_tokens, V = r->src_vocab;
    snprintf(buf, cap,
             "1:1 %.1f%% of target tokens (1:n %.1f%%, n:1 %.1f%%, none %.1f%%); vocabulary map exact %.1f%% of ids, %.1f%% of the "
             "text's tokens, unmapped %.1f%% / %.1f%%; %.2f vs %.2f bytes per token (source vs target)",
             100 * share(r->one_to_one, T), 100 * share(r->one_to_many, T), 100 * share(r->many_to_one, T), 100 * share(r->unaligned, T),
             100 * share(r->vocab[FK_MAP_EXACT], V), 100 * share(r->text[FK_MAP_EXACT], S), 100 * share(r->vocab[FK_MAP_UNMAPPED], V),
             100 * share(r->text[FK_MAP_UNMAPPED], S), share(r->bytes, S), share(r->bytes, T));
}

// ---------------------------------------------------------------- align_report.json

static const char *const class_names[FK_MAP_CLASSES] = {"exact", "special", "fallback", "unmapped"};

static void json_num(cJSON *o, const char *key, double v) { cJSON_AddItemToObject(o, key, cJSON_CreateNumber(v)); }

// {"exact": {"count": n, "share": x}, ...} over total.
static cJSON *json_classes(const int64_t *c, int64_t total) {
    cJSON *o = cJSON_CreateObject();
    for (int k = 0; k < FK_MAP_CLASSES; k++) {
        cJSON *e = cJSON_AddObjectToObject(o, class_names[k]);
        json_num(e, "count", (double)c[k]);
        json_num(e, "share", share(c[k], total));
    }
    return o;
}

static cJSON *json_source(const char *name, const fk_tokenizer *src, const fk_tokenizer *tgt, const fk_align_report *r) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "source", name);
    json_num(o, "tokens", (double)r->src_tokens);
    json_num(o, "bytes_per_token", share(r->bytes, r->src_tokens));
    json_num(o, "vocab", r->src_vocab);
    cJSON *a = cJSON_AddObjectToObject(o, "target_tokens");
    const char *names[] = {"one_to_one", "one_to_many", "many_to_one", "unaligned"};
    const int64_t counts[] = {r->one_to_one, r->one_to_many, r->many_to_one, r->unaligned};
    for (int k = 0; k < 4; k++) {
        cJSON *e = cJSON_AddObjectToObject(a, names[k]);
        json_num(e, "count", (double)counts[k]);
        json_num(e, "share", share(counts[k], r->tgt_tokens));
    }
    cJSON_AddItemToObject(o, "vocab_map_ids", json_classes(r->vocab, r->src_vocab));
    cJSON_AddItemToObject(o, "vocab_map_text", json_classes(r->text, r->src_tokens));
    cJSON *ms = cJSON_AddArrayToObject(o, "top_mismatches");
    char t[160];
    for (int i = 0; i < r->n_mismatch; i++) {
        const fk_align_mismatch *m = &r->mismatch[i];
        cJSON *e = cJSON_CreateObject();
        json_num(e, "count", (double)m->count);
        json_num(e, "share_of_source_tokens", share(m->count, r->src_tokens));
        json_num(e, "source_id", m->src);
        cJSON_AddStringToObject(e, "source_text", fk_align_token_text(src, m->src, t, sizeof t));
        json_num(e, "target_id", m->tgt);
        if (m->tgt >= 0) cJSON_AddStringToObject(e, "target_text", fk_align_token_text(tgt, m->tgt, t, sizeof t));
        else cJSON_AddNullToObject(e, "target_text");
        cJSON_AddItemToArray(ms, e);
    }
    return o;
}

static cJSON *json_report(const fk_align_report_set *s) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "target", s->target);
    cJSON_AddStringToObject(o, "data", s->data);
    cJSON_AddStringToObject(o, "align", fk_align_mode_name(s->ao.mode));
    cJSON_AddStringToObject(o, "vmap", fk_vmap_mode_name(s->ao.vmap));
    if (s->n > 0) {
        const fk_align_report *r = &s->reports[0];
        json_num(o, "bytes", (double)r->bytes);
        json_num(o, "target_tokens", (double)r->tgt_tokens);
        json_num(o, "target_bytes_per_token", share(r->bytes, r->tgt_tokens));
        json_num(o, "target_vocab", r->tgt_vocab);
    }
    cJSON *a = cJSON_AddArrayToObject(o, "sources");
    for (int i = 0; i < s->n; i++) cJSON_AddItemToArray(a, json_source(s->sources[i], s->src[i], s->tgt, &s->reports[i]));
    return o;
}

// ---------------------------------------------------------------- align_report.html

// A path's last component (the whole path when it ends in '/').
static const char *short_name(const char *path) {
    const char *sl = strrchr(path, '/');
    return sl && sl[1] ? sl + 1 : path;
}

// Horizontal bars, one row per source: the row's n_cat values stacked in the palette's colours
// from 0 to vmax, an x axis with ticks and its label (units included), a legend above.
static void stacked_rows(fk_sbuf *b, const char *title, const char *xlabel, const fk_align_report_set *s, const char *const *cats,
                         int n_cat, const double *v, double vmax, const char *fmt) {
    const int L = 230, W = 480, row = 26, top = 30;
    int h = top + row * s->n + 42;
    fk_sb(b, "<h3>%s</h3><svg width='%d' height='%d' xmlns='http://www.w3.org/2000/svg' font-family='sans-serif'>", title, L + W + 30, h);
    for (int c = 0, lx = L; c < n_cat && n_cat > 1; c++) {
        fk_sb(b, "<rect x='%d' y='6' width='12' height='12' fill='%s'/><text x='%d' y='16' font-size='11'>", lx, fk_svg_color(c), lx + 16);
        fk_sb_text(b, cats[c]);
        fk_sb(b, "</text>");
        lx += 36 + 7 * (int)strlen(cats[c]);
    }
    for (int i = 0; i < s->n; i++) {
        int y = top + row * i;
        const char *name = short_name(s->sources[i]);
        fk_sb(b, "<text x='%d' y='%d' font-size='11' text-anchor='end'>", L - 6, y + 15);
        fk_sb_text(b, name);
        fk_sb(b, "</text>");
        double x0 = 0;
        for (int c = 0; c < n_cat; c++) {
            double x = v[i * n_cat + c], w = vmax > 0 ? W * x / vmax : 0;
            char val[32];
            snprintf(val, sizeof val, fmt, x);
            fk_sb(b, "<rect x='%.1f' y='%d' width='%.1f' height='20' fill='%s'><title>", L + x0, y, w, fk_svg_color(c));
            fk_sb_text(b, name);
            fk_sb(b, ", ");
            fk_sb_text(b, cats[c]);
            fk_sb(b, ": %s</title></rect>", val);
            if (w > 34) fk_sb(b, "<text x='%.1f' y='%d' font-size='10' fill='white'>%s</text>", L + x0 + 3, y + 14, val);
            x0 += w;
        }
    }
    int ay = top + row * s->n + 2;
    fk_sb(b, "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='#666'/>", L, ay, L + W, ay);
    for (int k = 0; k <= 4; k++) {
        int x = L + W * k / 4;
        fk_sb(b, "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='#666'/><text x='%d' y='%d' font-size='10' text-anchor='middle'>%.3g</text>",
              x, ay, x, ay + 4, x, ay + 15, vmax * k / 4);
    }
    fk_sb(b, "<text x='%d' y='%d' font-size='11' text-anchor='middle'>", L + W / 2, ay + 32);
    fk_sb_text(b, xlabel);
    fk_sb(b, "</text></svg>");
}

// The charts: alignment of target tokens, the map by id and by text, bytes per token.
static void html_charts(fk_sbuf *b, const fk_align_report_set *s, double *v) {
    static const char *const acats[] = {"one to one", "one to many", "many to one", "unaligned"};
    static const char *const mcats[] = {"exact", "special", "fallback", "unmapped"};
    for (int i = 0; i < s->n; i++) {
        const fk_align_report *r = &s->reports[i];
        const int64_t c[] = {r->one_to_one, r->one_to_many, r->many_to_one, r->unaligned};
        for (int k = 0; k < 4; k++) v[i * 4 + k] = 100 * share(c[k], r->tgt_tokens);
    }
    stacked_rows(b, "Target tokens by alignment to each source's tokens", "share of the target's tokens on the text (%)", s, acats, 4, v,
                 100, "%.1f%%");
    for (int i = 0; i < s->n; i++)
        for (int k = 0; k < FK_MAP_CLASSES; k++) v[i * 4 + k] = 100 * share(s->reports[i].vocab[k], s->reports[i].src_vocab);
    stacked_rows(b, "Source vocabulary by how the map sends each id", "share of the source's vocabulary ids (%)", s, mcats, 4, v, 100, "%.1f%%");
    for (int i = 0; i < s->n; i++)
        for (int k = 0; k < FK_MAP_CLASSES; k++) v[i * 4 + k] = 100 * share(s->reports[i].text[k], s->reports[i].src_tokens);
    stacked_rows(b, "Source tokens on the text by how the map sends their id", "share of the source's tokens on the text (%)", s, mcats, 4, v,
                 100, "%.1f%%");
    double vmax = 0;
    for (int i = 0; i < s->n; i++) {
        v[i] = share(s->reports[i].bytes, s->reports[i].src_tokens);
        vmax = v[i] > vmax ? v[i] : vmax;
    }
    double tb = s->n ? share(s->reports[0].bytes, s->reports[0].tgt_tokens) : 0;
    static const char *const bcat[] = {"bytes per token"};
    char t[96];
    snprintf(t, sizeof t, "Bytes per token of each source's tokenizer (the target's: %.3f)", tb);
    stacked_rows(b, t, "bytes of text per token (bytes)", s, bcat, 1, v, (tb > vmax ? tb : vmax) * 1.1, "%.3f");
}

static void html_mismatches(fk_sbuf *b, const fk_align_report_set *s) {
    char a[160], c[160];
    for (int i = 0; i < s->n; i++) {
        const fk_align_report *r = &s->reports[i];
        fk_sb(b, "<h3>Top mismatches of ");
        fk_sb_text(b, s->sources[i]);
        fk_sb(b, "</h3><p>The most frequent source tokens on the text whose mapped target token has other bytes (or none).</p>"
                 "<table><tr><th>count</th><th>%% of source tokens</th><th>source token</th><th>id</th><th>mapped to</th><th>id</th></tr>");
        for (int k = 0; k < r->n_mismatch; k++) {
            const fk_align_mismatch *m = &r->mismatch[k];
            fk_sb(b, "<tr><td>%lld</td><td>%.3f</td><td><code>", (long long)m->count, 100 * share(m->count, r->src_tokens));
            fk_sb_text(b, fk_align_token_text(s->src[i], m->src, a, sizeof a));
            fk_sb(b, "</code></td><td>%d</td><td><code>", m->src);
            fk_sb_text(b, m->tgt >= 0 ? fk_align_token_text(s->tgt, m->tgt, c, sizeof c) : "(unmapped)");
            fk_sb(b, "</code></td><td>%d</td></tr>", m->tgt);
        }
        fk_sb(b, "</table>");
    }
}

static fk_status write_html(const fk_align_report_set *s, const char *dir) {
    fk_sbuf b = {0};
    double *v = malloc(sizeof *v * (size_t)(4 * s->n + 1));
    if (!v) return fk_error(FK_ERR_NOMEM, "out of memory");
    fk_sb(&b, "<!DOCTYPE html><html><head><meta charset='utf-8'><title>fusekit align</title><style>body{font-family:sans-serif;margin:2em;"
              "max-width:60em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}</style></head>"
              "<body><h1>Alignment report</h1><p>Target <code>");
    fk_sb_text(&b, s->target);
    fk_sb(&b, "</code> on <code>");
    fk_sb_text(&b, s->data);
    fk_sb(&b, "</code> (%lld bytes), token alignment <b>%s</b>, vocabulary map <b>%s</b>. Fused training uses a source's distribution "
              "at the target positions aligned one to one only; a source id the map sends to a token with other bytes (fallback) "
              "puts its probability on that token. Hover a bar for its value.</p>",
          s->n ? (long long)s->reports[0].bytes : 0LL, fk_align_mode_name(s->ao.mode), fk_vmap_mode_name(s->ao.vmap));
    html_charts(&b, s, v);
    html_mismatches(&b, s);
    fk_sb(&b, "</body></html>\n");
    free(v);
    return fk_sb_write_in(&b, dir, "align_report.html");
}

fk_status fk_align_report_write(const fk_align_report_set *s, const char *dir) {
    FK_TRY(fk_mkdir_p(dir));
    cJSON *j = json_report(s);
    if (!j) return fk_error(FK_ERR_NOMEM, "out of memory");
    FK_TRY(fk_json_write_in(dir, "align_report.json", j));
    return write_html(s, dir);
}
