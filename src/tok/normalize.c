// Unicode NFC (Hugging Face's NFC normalizer: Qwen2, GPT-NeoX), through ICU, with the source
// offset of every output byte so that token spans still point into the caller's text.
#include "tok/tok_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

typedef struct {
    char *buf;
    int64_t *src;
    size_t len, cap;
} nfc_out;

static fk_status out_reserve(nfc_out *o, size_t more) {
    if (o->len + more + 1 <= o->cap) return FK_OK;
    size_t cap = (o->len + more + 1) * 2;
    char *b = realloc(o->buf, cap);
    if (b) o->buf = b;
    int64_t *s = realloc(o->src, sizeof *s * cap);
    if (s) o->src = s;
    if (!b || !s) return fk_error(FK_ERR_NOMEM, "out of memory normalizing text (NFC)");
    o->cap = cap;
    return FK_OK;
}

// Appends bytes p[0, l), each mapped to the source offset `at` (a rewritten chunk) or, when
// at < 0, to its own offset starting at `own`.
static fk_status out_put(nfc_out *o, const char *p, size_t l, int64_t at, int64_t own) {
    FK_TRY(out_reserve(o, l));
    memcpy(o->buf + o->len, p, l);
    for (size_t i = 0; i < l; i++) o->src[o->len + i] = at >= 0 ? at : own + (int64_t)i;
    o->len += l;
    return FK_OK;
}

// NFC of one chunk (valid UTF-8) into u16 scratch; *same when it is NFC already.
static fk_status nfc_chunk(const UNormalizer2 *nf, const char *p, size_t l, nfc_out *o, int64_t at, bool *same) {
    UErrorCode err = U_ZERO_ERROR;
    int32_t n16 = 0;
    size_t cap = 3 * l + 16;  // NFC grows a text at most threefold
    UChar *a = malloc(sizeof *a * (l + 1)), *b = malloc(sizeof *b * cap);
    char *u8 = malloc(3 * cap + 4);
    fk_status st = a && b && u8 ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory normalizing text (NFC)");
    if (st == FK_OK) u_strFromUTF8(a, (int32_t)l + 1, &n16, p, (int32_t)l, &err);
    *same = true;
    if (st == FK_OK && U_SUCCESS(err) && !unorm2_isNormalized(nf, a, n16, &err) && U_SUCCESS(err)) {
        int32_t nb = unorm2_normalize(nf, a, n16, b, (int32_t)cap, &err), n8 = 0;
        if (U_SUCCESS(err)) u_strToUTF8(u8, (int32_t)(3 * cap + 4), &n8, b, nb, &err);
        if (U_SUCCESS(err)) {
            *same = false;
            st = out_put(o, u8, (size_t)n8, at, 0);
        }
    }
    if (st == FK_OK && U_FAILURE(err)) st = fk_error(FK_ERR_FORMAT, "NFC of the text at byte %lld failed: %s", (long long)at, u_errorName(err));
    free(a);
    free(b);
    free(u8);
    return st;
}

static bool chunk_valid(const char *p, size_t l) {
    for (size_t i = 0; i < l;) {
        int c = fk_utf8_valid_len((const unsigned char *)p + i, l - i);
        if (c == 0) return false;
        i += (size_t)c;
    }
    return true;
}

fk_status fk_nfc(const char *text, size_t n, char **out, int64_t **src, size_t *len) {
    *out = NULL;
    *src = NULL;
    *len = 0;
    // Only code points from U+0300 on (lead bytes 0xCC and up) can change or combine.
    size_t i = 0;
    while (i < n && (unsigned char)text[i] < 0xCC) i++;
    if (i == n) return FK_OK;
    UErrorCode err = U_ZERO_ERROR;
    const UNormalizer2 *nf = unorm2_getNFCInstance(&err);
    if (U_FAILURE(err)) return fk_error(FK_ERR_UNSUPPORTED, "ICU has no NFC normalizer: %s", u_errorName(err));
    nfc_out o = {0};
    bool changed = false;
    fk_status st = out_reserve(&o, n);
    // Chunks: an ASCII character (never composed with what precedes it, so a boundary) and
    // the non-ASCII bytes after it. Invalid UTF-8 is left as it is (Hugging Face never sees it).
    for (size_t a = 0; st == FK_OK && a < n;) {
        size_t b = a + 1;
        while (b < n && (unsigned char)text[b] >= 0x80) b++;
        bool same = true, high = false;
        for (size_t k = a; k < b && !high; k++) high = (unsigned char)text[k] >= 0xCC;
        if (high && chunk_valid(text + a, b - a)) st = nfc_chunk(nf, text + a, b - a, &o, (int64_t)a, &same);
        if (st == FK_OK && same) st = out_put(&o, text + a, b - a, -1, (int64_t)a);
        changed |= !same;
        a = b;
    }
    if (st != FK_OK || !changed) {
        free(o.buf);
        free(o.src);
        return st;
    }
    o.src[o.len] = (int64_t)n;
    *out = o.buf;
    *src = o.src;
    *len = o.len;
    return FK_OK;
}
