// Token alignment between two tokenizations of one text: byte offsets with DTW inside the
// regions where boundaries disagree, or FuseLLM's DTW over whole windows. See
// fusekit/align.h and fusion.md §2. Also the Levenshtein distance the DTW and MinED share.
#include "fusekit/align.h"
#include "fuse/align_internal.h"

#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- edit distance
FK_EDIT_DP(edit_dp, uint8_t)

int64_t fk_edit_distance(const void *a, size_t na, const void *b, size_t nb) {
    const uint8_t *pa = a, *pb = b;
    if (na > nb) { const uint8_t *t = pa; pa = pb; pb = t; size_t tn = na; na = nb; nb = tn; }
    if (na > 64) return edit_dp(pa, na, pb, nb);
    uint64_t peq[256] = {0};
    peq_set(peq, pa, na);
    return myers_bounded(peq, na, pb, nb, INT64_MAX - 1);
}

// ---------------------------------------------------------------- helpers
fk_status fk_align_parse_mode(const char *name, fk_align_mode *mode) {
    if (strcmp(name, "offsets") == 0) *mode = FK_ALIGN_OFFSETS;
    else if (strcmp(name, "dtw") == 0) *mode = FK_ALIGN_DTW;
    else if (strcmp(name, "fusellm") == 0) *mode = FK_ALIGN_FUSELLM;
    else return fk_error(FK_ERR_ARG, "token alignment must be offsets, dtw or fusellm (got \"%s\")", name);
    return FK_OK;
}

const char *fk_align_mode_name(fk_align_mode mode) {
    return mode == FK_ALIGN_DTW ? "dtw" : mode == FK_ALIGN_FUSELLM ? "fusellm" : "offsets";
}

fk_status fk_tokseq_from_out(const fk_tok_out *o, fk_tokseq *seq, int64_t **begin) {
    *begin = malloc(sizeof(int64_t) * (size_t)(o->n + 1));
    if (!*begin) return fk_error(FK_ERR_NOMEM, "out of memory for the spans of %lld tokens", (long long)o->n);
    for (int64_t i = 0; i < o->n; i++) {
        if (o->end[i] < o->begin[i] || (i > 0 && o->begin[i] != o->end[i - 1])) {
            free(*begin);
            *begin = NULL;
            return fk_error(FK_ERR_ARG, "token %lld spans [%lld, %lld): the spans do not tile a text", (long long)i,
                            (long long)o->begin[i], (long long)o->end[i]);
        }
        (*begin)[i] = o->begin[i];
    }
    (*begin)[o->n] = o->n ? o->end[o->n - 1] : 0;
    seq->n = o->n;
    seq->ids = o->ids;
    seq->begin = *begin;
    return FK_OK;
}

void fk_alignment_free(fk_alignment *a) {
    if (!a) return;
    free(a->lo);
    free(a->hi);
    free(a->one_to_one);
    memset(a, 0, sizeof *a);
}

// Token strings of a run of tokens, back to back: string k is buf[off[k] .. off[k + 1]).
typedef struct {
    uint8_t *buf;
    size_t len, cap;
    uint32_t *off;
    int64_t n, cap_n;
} strtab;

static void strtab_free(strtab *s) {
    free(s->buf);
    free(s->off);
    memset(s, 0, sizeof *s);
}

static fk_status strtab_reserve(strtab *s, size_t bytes) {
    if (s->len + bytes <= s->cap) return FK_OK;
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < s->len + bytes) cap *= 2;
    uint8_t *b = realloc(s->buf, cap);
    if (!b) return fk_error(FK_ERR_NOMEM, "out of memory for token strings");
    s->buf = b;
    s->cap = cap;
    return FK_OK;
}

// Appends the bytes of token id (all spaces removed when strip).
static fk_status strtab_add(strtab *s, const fk_tokenizer *t, int32_t id, bool strip) {
    if (s->n + 2 > s->cap_n) {
        int64_t cap = s->cap_n ? 2 * s->cap_n : 1024;
        uint32_t *o = realloc(s->off, sizeof *o * (size_t)cap);
        if (!o) return fk_error(FK_ERR_NOMEM, "out of memory for token strings");
        s->off = o;
        s->cap_n = cap;
    }
    if (s->n == 0) {
        s->len = 0;
        s->off[0] = 0;
    }
    FK_TRY(strtab_reserve(s, 64));
    size_t k = fk_tok_token_bytes(t, id, (char *)s->buf + s->len, s->cap - s->len);
    if (k > s->cap - s->len) {
        FK_TRY(strtab_reserve(s, k));
        fk_tok_token_bytes(t, id, (char *)s->buf + s->len, s->cap - s->len);
    }
    if (s->len + k > UINT32_MAX) return fk_error(FK_ERR_UNSUPPORTED, "token strings of one alignment region exceed 4 GB");
    if (strip) {
        uint8_t *p = s->buf + s->len, *w = p;
        for (size_t i = 0; i < k; i++)
            if (p[i] != ' ') *w++ = p[i];
        k = (size_t)(w - p);
    }
    s->len += k;
    s->off[++s->n] = (uint32_t)s->len;
    return FK_OK;
}

// Appends token id's FuseLLM string (fk_fusellm_token: code points, 4 bytes each).
static fk_status strtab_add_fusellm(strtab *s, const fk_tokenizer *t, int32_t id) {
    size_t k = fk_fusellm_token(t, id, NULL, 0);
    FK_TRY(strtab_reserve(s, 4 * k));
    FK_TRY(strtab_add(s, t, -1, false));  // an empty entry (fk_tok_token_bytes of -1 is empty), then filled in
    if (s->len + 4 * k > UINT32_MAX) return fk_error(FK_ERR_UNSUPPORTED, "token strings of one alignment region exceed 4 GB");
    fk_fusellm_token(t, id, (uint32_t *)(void *)(s->buf + s->len), k);
    s->len += 4 * k;
    s->off[s->n] = (uint32_t)s->len;
    return FK_OK;
}

// ---------------------------------------------------------------- alignment context
typedef struct {
    const fk_tokenizer *st, *tt;
    const fk_tokseq *s, *t;
    const int32_t *vmap;
    fk_alignment *out;
    strtab S, T;         // stripped strings of the current region's source and target tokens
    int64_t *D;          // DTW matrix of the current region
    size_t d_cap;
    uint64_t peq[256];   // zero between uses
    fk_cpeq *cq;         // FK_ALIGN_FUSELLM: code-point match vectors, zero between uses
} actx;

static void actx_free(actx *c) {
    strtab_free(&c->S);
    strtab_free(&c->T);
    free(c->D);
    free(c->cq);
}

// Each target token of [j0, j1) to the source tokens of [i0, i1) overlapping its bytes (an
// empty target token: the source token holding its byte). For regions too big for the DTW.
static void align_overlap(actx *c, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    const int64_t *sb = c->s->begin, *tb = c->t->begin;
    int64_t i = i0;
    for (int64_t j = j0; j < j1; j++) {
        int64_t x = tb[j], y = tb[j + 1];
        while (i < i1 - 1 && sb[i + 1] <= x) i++;  // first source token ending after x (or the last one)
        int64_t h = i;
        if (y > x) {
            while (h < i1 && sb[h] < y) h++;
        } else {
            h = i + 1;
        }
        if (h <= i) h = i + 1;
        c->out->lo[j] = i;
        c->out->hi[j] = h;
        c->out->one_to_one[j] = 0;
    }
}

// D[i, j] = cost + min(D[i-1, j-1], D[i-1, j], D[i, j-1]) given the costs so far (prev NULL:
// row 0, row[-1] unused in column 0).
static inline int64_t dtw_cell(const int64_t *row, const int64_t *prev, int64_t j, int64_t cost) {
    int64_t best;
    if (!prev) best = j == 0 ? 0 : row[j - 1];
    else if (j == 0) best = prev[j];
    else {
        best = prev[j - 1];
        if (prev[j] < best) best = prev[j];
        if (row[j - 1] < best) best = row[j - 1];
    }
    return cost + best;
}

// A row of the DTW for FK_ALIGN_FUSELLM: source string a (na code points) against the
// current region's target strings, distances over code points.
static fk_status dtw_row_fusellm(actx *c, int64_t *row, const int64_t *prev, const uint32_t *a, size_t na) {
    bool bits = fk_cpeq_set(c->cq, a, na);
    for (int64_t j = 0; j < c->T.n; j++) {
        const uint32_t *b = (const uint32_t *)(const void *)(c->T.buf + c->T.off[j]);
        int64_t cost = fk_cp_distance(bits ? c->cq : NULL, a, na, b, (c->T.off[j + 1] - c->T.off[j]) / 4, INT64_MAX - 1);
        if (cost < 0) return fk_error(FK_ERR_NOMEM, "out of memory computing an edit distance");
        row[j] = dtw_cell(row, prev, j, cost);
    }
    if (bits) fk_cpeq_clear(c->cq, a, na);
    return FK_OK;
}

// FuseLLM's DTW on source tokens [i0, i1) (rows) and target tokens [j0, j1) (columns).
static fk_status align_dtw(actx *c, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    int64_t ns = i1 - i0, nt = j1 - j0;
    fk_alignment *o = c->out;
    if (nt == 0) return FK_OK;
    if (ns == 0) {
        for (int64_t j = j0; j < j1; j++) {
            if (c->t->begin[j + 1] > c->t->begin[j])
                return fk_error(FK_ERR_ARG, "alignment: target token %lld covers bytes [%lld, %lld) that no source token covers",
                                (long long)j, (long long)c->t->begin[j], (long long)c->t->begin[j + 1]);
            o->lo[j] = o->hi[j] = i0;
            o->one_to_one[j] = 0;
        }
        return FK_OK;
    }
    if (ns * nt > FK_ALIGN_MAX_CELLS) {
        align_overlap(c, i0, i1, j0, j1);
        return FK_OK;
    }
    c->S.n = c->T.n = 0;
    for (int64_t i = i0; i < i1; i++)
        FK_TRY(c->cq ? strtab_add_fusellm(&c->S, c->st, c->s->ids[i]) : strtab_add(&c->S, c->st, c->s->ids[i], true));
    for (int64_t j = j0; j < j1; j++)
        FK_TRY(c->cq ? strtab_add_fusellm(&c->T, c->tt, c->t->ids[j]) : strtab_add(&c->T, c->tt, c->t->ids[j], true));
    size_t cells = (size_t)(ns * nt);
    if (cells > c->d_cap) {
        int64_t *d = realloc(c->D, cells * sizeof *d);
        if (!d) return fk_error(FK_ERR_NOMEM, "out of memory for a %lld x %lld alignment matrix", (long long)ns, (long long)nt);
        c->D = d;
        c->d_cap = cells;
    }
    int64_t *D = c->D;
    const uint8_t *sbuf = c->S.buf, *tbuf = c->T.buf;
    const uint32_t *so = c->S.off, *to = c->T.off;
    for (int64_t i = 0; i < ns; i++) {
        const uint8_t *a = sbuf + so[i];
        size_t na = so[i + 1] - so[i];
        if (c->cq) {  // FK_ALIGN_FUSELLM: code points
            FK_TRY(dtw_row_fusellm(c, D + i * nt, i > 0 ? D + (i - 1) * nt : NULL, (const uint32_t *)(const void *)a, na / 4));
            continue;
        }
        bool bits = na <= 64;
        if (bits) peq_set(c->peq, a, na);
        int64_t *row = D + i * nt, *prev = i > 0 ? row - nt : row;  // (prev unused in row 0)
        for (int64_t j = 0; j < nt; j++) {
            const uint8_t *b = tbuf + to[j];
            size_t nb = to[j + 1] - to[j];
            int64_t cost = bits ? myers_bounded(c->peq, na, b, nb, INT64_MAX - 1) : edit_dp(a, na, b, nb);
            if (cost < 0) {
                if (bits) peq_clear(c->peq, a, na);
                return fk_error(FK_ERR_NOMEM, "out of memory computing an edit distance");
            }
            row[j] = dtw_cell(row, i > 0 ? prev : NULL, j, cost);
        }
        if (bits) peq_clear(c->peq, a, na);
    }
    // Backtrack from the last cell; at each step the predecessor with the smallest D, ties in
    // the reference's order: diagonal, source step (up), target step (left).
    int64_t i = ns - 1, j = nt - 1;
    o->hi[j0 + j] = i0 + i + 1;
    o->lo[j0 + j] = i0 + i;
    while (i > 0 || j > 0) {
        int64_t od = i > 0 && j > 0 ? D[(i - 1) * nt + j - 1] : INT64_MAX;
        int64_t ou = i > 0 ? D[(i - 1) * nt + j] : INT64_MAX;
        int64_t ol = j > 0 ? D[i * nt + j - 1] : INT64_MAX;
        bool new_col = true;
        if (od <= ou && od <= ol) { i--; j--; }
        else if (ou <= ol) { i--; new_col = false; }
        else j--;
        if (new_col) o->hi[j0 + j] = i0 + i + 1;  // walking back, a column is entered at its last source token
        o->lo[j0 + j] = i0 + i;
        o->one_to_one[j0 + j] = 0;
    }
    o->one_to_one[j0 + nt - 1] = 0;
    return FK_OK;
}

// ---------------------------------------------------------------- modes
static fk_status align_offsets(actx *c) {
    const int64_t *sb = c->s->begin, *tb = c->t->begin;
    int64_t ns = c->s->n, nt = c->t->n, i = 0, j = 0;
    fk_alignment *o = c->out;
    while (i < ns || j < nt) {
        // Both sides stand at the same byte, a shared boundary. First the empty tokens there.
        int64_t pos = i < ns ? sb[i] : sb[ns];
        int64_t ie = i, je = j;
        while (ie < ns && sb[ie + 1] == pos) ie++;
        while (je < nt && tb[je + 1] == pos) je++;
        int64_t np = ie - i < je - j ? ie - i : je - j;
        for (int64_t p = 0; p < np; p++) {
            o->lo[j + p] = i + p;
            o->hi[j + p] = i + p + 1;
            o->one_to_one[j + p] = 1;
        }
        for (int64_t q = j + np; q < je; q++) {
            o->lo[q] = o->hi[q] = ie;
            o->one_to_one[q] = 0;
        }
        i = ie;
        j = je;
        if (i == ns && j == nt) break;
        if (i == ns || j == nt)
            return fk_error(FK_ERR_ARG, "alignment: at byte %lld the %s tokens end and the %s tokens go on", (long long)pos,
                            i == ns ? "source" : "target", i == ns ? "target" : "source");
        int64_t a = sb[i + 1], b = tb[j + 1];
        if (a == b) {  // identical spans
            o->lo[j] = i;
            o->hi[j] = i + 1;
            o->one_to_one[j] = 1;
            i++;
            j++;
            continue;
        }
        // A region up to the next shared boundary; empty tokens inside it belong to it.
        int64_t i1 = i + 1, j1 = j + 1;
        while (a != b) {
            if (a < b) a = sb[++i1];
            else b = tb[++j1];
        }
        FK_TRY(align_dtw(c, i, i1, j, j1));
        i = i1;
        j = j1;
    }
    return FK_OK;
}

// The text of a token for the DTW mode's agreement test: its bytes, without the space a
// SentencePiece dummy prefix adds (a token standing for more bytes than it covers).
static size_t agree_text(const fk_tokenizer *t, const fk_tokseq *q, int64_t i, uint8_t *buf, size_t cap, size_t *start) {
    size_t k = fk_tok_token_bytes(t, q->ids[i], (char *)buf, cap);
    *start = 0;
    if (k > 0 && k <= cap && buf[0] == ' ' && (int64_t)k > q->begin[i + 1] - q->begin[i]) *start = 1;
    return k;
}

static bool tokens_agree(actx *c, int64_t i, int64_t j) {
    if (c->vmap && c->vmap[c->s->ids[i]] == c->t->ids[j]) return true;
    uint8_t a[512], b[512];
    size_t sa, sbg;
    size_t na = agree_text(c->st, c->s, i, a, sizeof a, &sa);
    size_t nb = agree_text(c->tt, c->t, j, b, sizeof b, &sbg);
    if (na > sizeof a || nb > sizeof b) {  // long tokens: compare through the heap
        uint8_t *x = malloc(na + nb);
        if (!x) return false;
        fk_tok_token_bytes(c->st, c->s->ids[i], (char *)x, na);
        fk_tok_token_bytes(c->tt, c->t->ids[j], (char *)x + na, nb);
        sa = x[0] == ' ' && (int64_t)na > c->s->begin[i + 1] - c->s->begin[i];
        sbg = nb > 0 && x[na] == ' ' && (int64_t)nb > c->t->begin[j + 1] - c->t->begin[j];
        bool eq = na - sa == nb - sbg && memcmp(x + sa, x + na + sbg, na - sa) == 0;
        free(x);
        return eq;
    }
    return na - sa == nb - sbg && memcmp(a + sa, b + sbg, na - sa) == 0;
}

static fk_status align_dtw_windows(actx *c) {
    const int64_t *sb = c->s->begin, *tb = c->t->begin;
    int64_t ns = c->s->n, nt = c->t->n, W = FK_ALIGN_DTW_WINDOW;
    int64_t i0 = 0, j0 = 0;
    while (i0 < ns || j0 < nt) {
        int64_t i1 = ns, j1 = nt;
        if (nt - j0 > W && i0 < ns) {
            // Cut at the first boundary both sides share after W target tokens; failing one
            // within another W tokens, at the first boundary after W that leaves source
            // tokens on both sides of the cut.
            int64_t b0 = tb[j0], ip = i0, fb_j = -1, fb_i = -1, cut_j = -1, cut_i = -1;
            for (int64_t jc = j0 + W; jc < nt; jc++) {
                int64_t B = tb[jc];
                if (B <= b0) continue;
                while (ip < ns && sb[ip] < B) ip++;
                if (ip <= i0) continue;
                if (sb[ip] == B) { cut_j = jc; cut_i = ip; break; }
                if (fb_j < 0 && ip < ns) { fb_j = jc; fb_i = ip; }
                if (fb_j >= 0 && jc >= j0 + 2 * W) { cut_j = fb_j; cut_i = fb_i; break; }
            }
            if (cut_j >= 0) {  // (none: the rest is one window)
                j1 = cut_j;
                while (j1 > j0 && tb[j1 - 1] == tb[cut_j]) j1--;  // empty tokens at the cut open the next window
                i1 = cut_i;
            }
        }
        FK_TRY(align_dtw(c, i0, i1, j0, j1));
        i0 = i1;
        j0 = j1;
    }
    // One to one as the reference decides it: a single source token, agreeing with the target
    // token (that source token may also be aligned to a neighbouring target token).
    fk_alignment *o = c->out;
    for (int64_t j = 0; j < nt; j++)
        o->one_to_one[j] = o->hi[j] - o->lo[j] == 1 &&
                           (c->cq ? fk_fusellm_agree(c->st, c->s->ids[o->lo[j]], c->tt, c->t->ids[j], j == 0, c->vmap) : tokens_agree(c, o->lo[j], j));
    return FK_OK;
}

static fk_status check_seq(const fk_tokenizer *t, const fk_tokseq *q, const char *what) {
    if (!q || q->n < 0 || (q->n > 0 && (!q->ids || !q->begin)) || (q->n == 0 && !q->begin))
        return fk_error(FK_ERR_ARG, "alignment: the %s token sequence is missing", what);
    int32_t nv = fk_tok_vocab_size(t);
    for (int64_t i = 0; i < q->n; i++) {
        if (q->ids[i] < 0 || q->ids[i] >= nv)
            return fk_error(FK_ERR_ARG, "alignment: %s token %lld has id %d, outside the vocabulary of %d", what, (long long)i,
                            q->ids[i], nv);
        if (q->begin[i + 1] < q->begin[i])
            return fk_error(FK_ERR_ARG, "alignment: %s token %lld spans [%lld, %lld): spans must be in order", what, (long long)i,
                            (long long)q->begin[i], (long long)q->begin[i + 1]);
    }
    return FK_OK;
}

fk_status fk_align_tokens(const fk_tokenizer *src_tok, const fk_tokseq *src, const fk_tokenizer *tgt_tok, const fk_tokseq *tgt,
                          fk_align_mode mode, const int32_t *vmap, fk_alignment *out) {
    memset(out, 0, sizeof *out);
    if (!src_tok || !tgt_tok) return fk_error(FK_ERR_ARG, "alignment: a tokenizer is missing");
    if (mode != FK_ALIGN_OFFSETS && mode != FK_ALIGN_DTW && mode != FK_ALIGN_FUSELLM)
        return fk_error(FK_ERR_ARG, "alignment: unknown mode %d", (int)mode);
    FK_TRY(check_seq(src_tok, src, "source"));
    FK_TRY(check_seq(tgt_tok, tgt, "target"));
    if (src->begin[0] != tgt->begin[0] || src->begin[src->n] != tgt->begin[tgt->n])
        return fk_error(FK_ERR_ARG, "alignment: the source tokens cover bytes [%lld, %lld), the target tokens [%lld, %lld)",
                        (long long)src->begin[0], (long long)src->begin[src->n], (long long)tgt->begin[0],
                        (long long)tgt->begin[tgt->n]);
    size_t n = (size_t)(tgt->n > 0 ? tgt->n : 1);
    out->n = tgt->n;
    out->lo = malloc(n * sizeof *out->lo);
    out->hi = malloc(n * sizeof *out->hi);
    out->one_to_one = calloc(n, 1);
    if (!out->lo || !out->hi || !out->one_to_one) {
        fk_alignment_free(out);
        return fk_error(FK_ERR_NOMEM, "out of memory aligning %lld target tokens", (long long)tgt->n);
    }
    actx c = {.st = src_tok, .tt = tgt_tok, .s = src, .t = tgt, .vmap = vmap, .out = out};
    fk_status st = FK_OK;
    if (mode == FK_ALIGN_FUSELLM && !(c.cq = calloc(1, sizeof *c.cq))) st = fk_error(FK_ERR_NOMEM, "out of memory for an alignment");
    if (st == FK_OK) st = mode == FK_ALIGN_OFFSETS ? align_offsets(&c) : align_dtw_windows(&c);
    actx_free(&c);
    if (st != FK_OK) fk_alignment_free(out);
    return st;
}
