// GGUF v2/v3 reader (mmap, every length and offset checked against the file size) and
// atomic v3 writer. Arrays of arrays are read by validating and skipping them (the kv
// keeps a pointer to the raw payload; the typed getters refuse them).
#include "fusekit/gguf.h"
#include "fusekit/quants.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rd64(const unsigned char *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = (v << 8) | p[i]; return v; }
static uint32_t rd32(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static void wr64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void wr32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }

#define MAX_NEST 8       // array-of-array depth the reader follows
#define SHOW 200         // at most this many bytes of a key or tensor name in messages

static const char *type_names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
static const uint8_t type_sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};  // 0: variable

const char *fk_gguf_type_name(fk_gguf_type t) { return (unsigned)t <= FK_GGUF_F64 ? type_names[t] : "?"; }
static bool is_int(fk_gguf_type t) { return t <= FK_GGUF_I32 || t == FK_GGUF_U64 || t == FK_GGUF_I64; }
static bool is_num(fk_gguf_type t) { return (unsigned)t <= FK_GGUF_F64 && t != FK_GGUF_STRING && t != FK_GGUF_ARRAY; }
static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }
static int show(uint64_t n) { return n > SHOW ? SHOW : (int)n; }

// ---------------------------------------------------------------- reader

typedef struct {
    const unsigned char *b;
    uint64_t size, pos;
    const char *path;
    const char *what;  // "key" or "tensor" (NULL in the header)
    fk_gguf_str name;
} rd;

static fk_status bad(const rd *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static fk_status bad(const rd *r, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->what && r->name.s)
        return fk_error(FK_ERR_FORMAT, "%s: %s '%.*s': %s", r->path, r->what, show(r->name.n), r->name.s, msg);
    return fk_error(FK_ERR_FORMAT, "%s: %s", r->path, msg);
}

static fk_status need(const rd *r, uint64_t n, const char *item) {
    if (n <= r->size - r->pos) return FK_OK;
    return bad(r, "truncated: %s needs %llu bytes at offset %llu but the file has %llu bytes", item,
               (unsigned long long)n, (unsigned long long)r->pos, (unsigned long long)r->size);
}
static fk_status get32(rd *r, uint32_t *v, const char *item) { FK_TRY(need(r, 4, item)); *v = rd32(r->b + r->pos); r->pos += 4; return FK_OK; }
static fk_status get64(rd *r, uint64_t *v, const char *item) { FK_TRY(need(r, 8, item)); *v = rd64(r->b + r->pos); r->pos += 8; return FK_OK; }

// A string: u64 length + bytes. `idx` >= 0 names the element of a string array.
static fk_status get_str(rd *r, fk_gguf_str *s, const char *item, int64_t idx) {
    uint64_t n, at = r->pos;
    FK_TRY(get64(r, &n, item));
    if (n > r->size - r->pos) {
        char what[64];
        if (idx >= 0) snprintf(what, sizeof what, "string %lld", (long long)idx); else snprintf(what, sizeof what, "%s", item);
        return bad(r, "%s runs past the end of the file (offset %llu, length %llu, file %llu bytes)", what,
                   (unsigned long long)at, (unsigned long long)n, (unsigned long long)r->size);
    }
    s->s = (const char *)r->b + r->pos;
    s->n = n;
    r->pos += n;
    return FK_OK;
}

static fk_status check_type(const rd *r, uint32_t t, const char *item) {
    if (t <= FK_GGUF_F64) return FK_OK;
    return bad(r, "unknown %s type %u (known: 0..12)", item, t);
}

// An array after its u32 element type has been read: count, elements. Fills `strs`
// (count entries) for a string array when strs_out is not NULL.
static fk_status get_array(rd *r, uint32_t elem, uint64_t *count_out, fk_gguf_str **strs_out, int depth) {
    uint64_t count;
    FK_TRY(get64(r, &count, "array length"));
    uint64_t left = r->size - r->pos;
    uint64_t min = type_sizes[elem] ? type_sizes[elem] : elem == FK_GGUF_STRING ? 8 : 12;
    if (count > left / min)
        return bad(r, "array of %llu %s elements (at least %llu bytes each) does not fit in the %llu bytes left in the file",
                   (unsigned long long)count, fk_gguf_type_name(elem), (unsigned long long)min, (unsigned long long)left);
    if (count_out) *count_out = count;
    if (type_sizes[elem]) { r->pos += count * type_sizes[elem]; return FK_OK; }
    if (elem == FK_GGUF_STRING) {
        // every string is checked against the file first; the index is allocated only for an
        // array the file really holds (at most 2 bytes of index per byte of the file)
        fk_gguf_str tmp;
        uint64_t start = r->pos;
        for (uint64_t i = 0; i < count; i++) FK_TRY(get_str(r, &tmp, "string", (int64_t)i));
        if (!strs_out) return FK_OK;
        fk_gguf_str *strs = malloc((count ? count : 1) * sizeof *strs);
        if (!strs) return fk_error(FK_ERR_NOMEM, "%s: out of memory for %llu strings", r->path, (unsigned long long)count);
        uint64_t end = r->pos;
        r->pos = start;
        for (uint64_t i = 0; i < count; i++) get_str(r, &strs[i], "string", (int64_t)i);  // checked above
        r->pos = end;
        *strs_out = strs;
        return FK_OK;
    }
    // array of arrays: validate and skip
    if (depth >= MAX_NEST) return bad(r, "arrays nested more than %d deep", MAX_NEST);
    for (uint64_t i = 0; i < count; i++) {
        uint32_t t;
        FK_TRY(get32(r, &t, "nested array element type"));
        FK_TRY(check_type(r, t, "nested array element"));
        FK_TRY(get_array(r, t, NULL, NULL, depth + 1));
    }
    return FK_OK;
}

// Before the name of key or tensor i is read: a length running past the file is named as such.
static fk_status check_name(rd *r, const char *what, int64_t i) {
    uint64_t n;
    r->what = NULL;
    if (r->size - r->pos >= 8 && (n = rd64(r->b + r->pos)) > r->size - r->pos - 8)
        return bad(r, "%s %lld: name runs past the end of the file (offset %llu, length %llu, file %llu bytes)", what,
                   (long long)i, (unsigned long long)r->pos, (unsigned long long)n, (unsigned long long)r->size);
    return FK_OK;
}

// Reads the name of key or tensor i (what: "key" or "tensor"); later errors name it.
static fk_status read_name(rd *r, const char *what, int64_t i, fk_gguf_str *name, const char *label) {
    FK_TRY(check_name(r, what, i));
    FK_TRY(get_str(r, name, label, -1));
    r->what = what;
    r->name = *name;
    return FK_OK;
}

static fk_status read_kv(rd *r, int64_t i, fk_gguf_kv *kv) {
    FK_TRY(read_name(r, "key", i, &kv->key, "key name"));
    uint32_t t;
    FK_TRY(get32(r, &t, "value type"));
    FK_TRY(check_type(r, t, "value"));
    kv->type = kv->elem_type = (fk_gguf_type)t;
    kv->count = 1;
    if (t == FK_GGUF_STRING) {
        kv->strs = malloc(sizeof *kv->strs);
        if (!kv->strs) return fk_error(FK_ERR_NOMEM, "out of memory");
        FK_TRY(get_str(r, kv->strs, "string value", -1));
        kv->data = kv->strs->s;
    } else if (t == FK_GGUF_ARRAY) {
        uint32_t e;
        FK_TRY(get32(r, &e, "array element type"));
        FK_TRY(check_type(r, e, "array element"));
        kv->elem_type = (fk_gguf_type)e;
        uint64_t start = r->pos + 8;  // elements follow the u64 count
        FK_TRY(get_array(r, e, &kv->count, e == FK_GGUF_STRING ? &kv->strs : NULL, 1));
        kv->data = r->b + start;
    } else {
        FK_TRY(need(r, type_sizes[t], "value"));
        kv->data = r->b + r->pos;
        r->pos += type_sizes[t];
    }
    return FK_OK;
}

static fk_status read_tensor(rd *r, int64_t i, fk_gguf_tensor *t) {
    FK_TRY(read_name(r, "tensor", i, &t->name, "tensor name"));
    FK_TRY(get32(r, &t->n_dims, "n_dims"));
    if (t->n_dims > FK_GGUF_MAX_DIMS) return bad(r, "has %u dimensions, at most %d are supported", t->n_dims, FK_GGUF_MAX_DIMS);
    uint64_t elems = 1;
    for (uint32_t d = 0; d < FK_GGUF_MAX_DIMS; d++) t->dims[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        FK_TRY(get64(r, &t->dims[d], "dimension"));
        if (t->dims[d] == 0) return bad(r, "dimension %u is 0", d);
        if (t->dims[d] > (uint64_t)INT64_MAX / elems)
            return bad(r, "dimensions overflow: the element count exceeds 2^63 at dimension %u (%llu)", d,
                       (unsigned long long)t->dims[d]);
        elems *= t->dims[d];
    }
    FK_TRY(get32(r, &t->ggml_type, "ggml type"));
    FK_TRY(get64(r, &t->offset, "data offset"));
    const fk_ggml_type_info *ti = fk_ggml_type(t->ggml_type);
    if (!ti) return bad(r, "unknown ggml type %u (fusekit knows the ids of ggml.h's enum ggml_type below %d)", t->ggml_type, FK_GGML_TYPE_COUNT);
    if (t->dims[0] % (uint64_t)ti->block)
        return bad(r, "has rows of %llu elements (dimension 0), which is not a multiple of the %s block size %d",
                   (unsigned long long)t->dims[0], ti->name, ti->block);
    if (fk_ggml_tensor_bytes(t->ggml_type, t->dims, t->n_dims, &t->nbytes) != FK_OK || t->nbytes > (uint64_t)INT64_MAX)
        return bad(r, "%llu elements of %s overflow the byte count", (unsigned long long)elems, ti->name);
    return FK_OK;
}

// Tensors ordered by data offset (for the overlap check).
static int cmp_offset(const void *a, const void *b) {
    uint64_t x = (*(const fk_gguf_tensor *const *)a)->offset, y = (*(const fk_gguf_tensor *const *)b)->offset;
    return (x > y) - (x < y);
}

static fk_status check_overlaps(const char *path, const fk_gguf_tensor *ts, int64_t n) {
    if (n < 2) return FK_OK;
    const fk_gguf_tensor **idx = malloc((size_t)n * sizeof *idx);
    if (!idx) return fk_error(FK_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) idx[i] = &ts[i];
    qsort(idx, (size_t)n, sizeof *idx, cmp_offset);
    fk_status st = FK_OK;
    for (int64_t i = 1; i < n && st == FK_OK; i++) {
        const fk_gguf_tensor *a = idx[i - 1], *b = idx[i];
        if (b->offset - a->offset < a->nbytes)
            st = fk_error(FK_ERR_FORMAT, "%s: tensor '%.*s' (offset %llu) overlaps tensor '%.*s' (offset %llu, %llu bytes)", path,
                          show(b->name.n), b->name.s, (unsigned long long)b->offset, show(a->name.n), a->name.s,
                          (unsigned long long)a->offset, (unsigned long long)a->nbytes);
    }
    free(idx);
    return st;
}

static int cmp_str(const void *a, const void *b) {
    const fk_gguf_str *x = *(const fk_gguf_str *const *)a, *y = *(const fk_gguf_str *const *)b;
    int c = memcmp(x->s, y->s, x->n < y->n ? x->n : y->n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

// Names are fk_gguf_str at a fixed stride inside an array of structs.
static fk_status check_dups(const char *path, const char *what, const void *items, int64_t n, size_t stride) {
    if (n < 2) return FK_OK;
    const fk_gguf_str **idx = malloc((size_t)n * sizeof *idx);
    if (!idx) return fk_error(FK_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) idx[i] = (const fk_gguf_str *)((const char *)items + (size_t)i * stride);
    qsort(idx, (size_t)n, sizeof *idx, cmp_str);
    fk_status st = FK_OK;
    for (int64_t i = 1; i < n && st == FK_OK; i++)
        if (cmp_str(&idx[i - 1], &idx[i]) == 0)
            st = fk_error(FK_ERR_FORMAT, "%s: duplicate %s '%.*s'", path, what, show(idx[i]->n), idx[i]->s);
    free(idx);
    return st;
}

void fk_gguf_close(fk_gguf *g) {
    for (int64_t i = 0; g->kvs && i < g->n_kv; i++) free(g->kvs[i].strs);
    free(g->kvs);
    free(g->tensors);
    free(g->path);
    fk_mmap_close(&g->map);
    memset(g, 0, sizeof *g);
}

// Doubles *cap (from 64) up to max entries of sz bytes.
static fk_status grow_to(const char *path, void **p, uint64_t *cap, uint64_t max, size_t sz) {
    uint64_t c = *cap ? *cap * 2 : 64;
    if (c > max) c = max;
    void *q = realloc(*p, (size_t)c * sz);
    if (!q) return fk_error(FK_ERR_NOMEM, "%s: out of memory for %llu entries", path, (unsigned long long)c);
    *p = q;
    *cap = c;
    return FK_OK;
}

static fk_status gguf_parse(fk_gguf *g, const char *path) {
    rd r = {.b = g->map.data, .size = g->map.size, .path = path};
    if (r.size < 4) return bad(&r, "not a GGUF file (only %llu bytes)", (unsigned long long)r.size);
    if (memcmp(r.b, "GGUF", 4) != 0)
        return bad(&r, "bad magic %02x %02x %02x %02x (expected \"GGUF\"): not a GGUF file", r.b[0], r.b[1], r.b[2], r.b[3]);
    if (r.size < 24) return bad(&r, "truncated header (%llu bytes, a GGUF header needs 24)", (unsigned long long)r.size);
    r.pos = 4;
    uint64_t n_tensors, n_kv;
    get32(&r, &g->version, "version");
    if (g->version == 1) return bad(&r, "GGUF version 1 is not supported (only versions 2 and 3)");
    if (g->version != 2 && g->version != 3) {
        if ((g->version & 0xffff) == 0 && g->version >> 16)
            return bad(&r, "GGUF version field 0x%08x: a big-endian file, which is not supported", g->version);
        return bad(&r, "unsupported GGUF version %u (expected 2 or 3)", g->version);
    }
    get64(&r, &n_tensors, "tensor count");
    get64(&r, &n_kv, "kv count");
    uint64_t left = r.size - r.pos;  // a kv takes at least 13 bytes, a tensor info at least 24
    if (n_kv > left / 13)
        return bad(&r, "kv count %llu cannot fit in the %llu bytes after the header (truncated or corrupt)",
                   (unsigned long long)n_kv, (unsigned long long)left);
    if (n_tensors > left / 24 || n_kv * 13 + n_tensors * 24 > left)
        return bad(&r, "tensor count %llu and kv count %llu cannot fit in the %llu bytes after the header (truncated or corrupt)",
                   (unsigned long long)n_tensors, (unsigned long long)n_kv, (unsigned long long)left);
    // The arrays grow as entries are read: the counts are bounded by the file's size, but a
    // corrupt count is only found out when the entries run out, and must not be trusted first.
    uint64_t cap_kv = 0, cap_t = 0;
    for (uint64_t i = 0; i < n_kv; i++) {
        if (i == cap_kv) FK_TRY(grow_to(path, (void **)&g->kvs, &cap_kv, n_kv, sizeof *g->kvs));
        memset(&g->kvs[i], 0, sizeof g->kvs[i]);
        g->n_kv = (int64_t)i + 1;  // so close() frees this entry's strs
        FK_TRY(read_kv(&r, (int64_t)i, &g->kvs[i]));
    }
    FK_TRY(check_dups(path, "key", g->kvs, g->n_kv, sizeof *g->kvs));
    g->alignment = FK_GGUF_DEFAULT_ALIGNMENT;
    const fk_gguf_kv *al = fk_gguf_find(g, "general.alignment");
    if (al) {
        if (al->type != FK_GGUF_U32)
            return fk_error(FK_ERR_FORMAT, "%s: key 'general.alignment' has type %s, expected u32", path, fk_gguf_type_name(al->type));
        uint32_t a = rd32(al->data);
        if (a == 0 || (a & (a - 1)))
            return fk_error(FK_ERR_FORMAT, "%s: key 'general.alignment' is %u, expected a nonzero power of two", path, a);
        g->alignment = a;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        if (i == cap_t) FK_TRY(grow_to(path, (void **)&g->tensors, &cap_t, n_tensors, sizeof *g->tensors));
        memset(&g->tensors[i], 0, sizeof g->tensors[i]);
        FK_TRY(read_tensor(&r, (int64_t)i, &g->tensors[i]));
        g->n_tensors = (int64_t)i + 1;
    }
    FK_TRY(check_dups(path, "tensor", g->tensors, g->n_tensors, sizeof *g->tensors));
    g->data_offset = align_up(r.pos, g->alignment);  // a file without tensors may end before the padding
    uint64_t data_size = g->data_offset <= r.size ? r.size - g->data_offset : 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        fk_gguf_tensor *t = &g->tensors[i];
        r.what = "tensor";
        r.name = t->name;
        if (t->offset % g->alignment)
            return bad(&r, "data offset %llu is not a multiple of the alignment %llu", (unsigned long long)t->offset,
                       (unsigned long long)g->alignment);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return bad(&r, "data runs past the end of the file (data section at %llu, offset %llu, %llu bytes, file %llu bytes)",
                       (unsigned long long)g->data_offset, (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                       (unsigned long long)r.size);
        t->data = r.b + g->data_offset + t->offset;
    }
    return check_overlaps(path, g->tensors, g->n_tensors);
}

fk_status fk_gguf_open(const char *path, fk_gguf *g) {
    memset(g, 0, sizeof *g);
    FK_TRY(fk_mmap_open(&g->map, path));
    g->path = strdup(path);
    fk_status st = g->path ? gguf_parse(g, path) : fk_error(FK_ERR_NOMEM, "out of memory");
    if (st != FK_OK) fk_gguf_close(g);
    return st;
}

// ---------------------------------------------------------------- lookups and getters

const fk_gguf_kv *fk_gguf_find(const fk_gguf *g, const char *key) {
    size_t n = strlen(key);
    for (int64_t i = 0; i < g->n_kv; i++)
        if (g->kvs[i].key.n == n && memcmp(g->kvs[i].key.s, key, n) == 0) return &g->kvs[i];
    return NULL;
}

const fk_gguf_tensor *fk_gguf_find_tensor(const fk_gguf *g, const char *name) {
    size_t n = strlen(name);
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].name.n == n && memcmp(g->tensors[i].name.s, name, n) == 0) return &g->tensors[i];
    return NULL;
}

static const unsigned char *elem_at(const fk_gguf_kv *kv, uint64_t i) {
    FK_ASSERT(is_num(kv->elem_type) && i < kv->count);
    return (const unsigned char *)kv->data + i * type_sizes[kv->elem_type];
}

// Integer element i; *neg set when the value is a negative signed integer (returned as its two's complement).
static uint64_t int_at(const fk_gguf_kv *kv, uint64_t i, bool *neg) {
    const unsigned char *p = elem_at(kv, i);
    uint64_t u = 0;
    int64_t s = 0;
    bool sgn = false;
    switch (kv->elem_type) {
    case FK_GGUF_U8: case FK_GGUF_BOOL: u = p[0]; break;
    case FK_GGUF_I8: s = (int8_t)p[0]; sgn = true; break;
    case FK_GGUF_U16: u = (uint16_t)(p[0] | p[1] << 8); break;
    case FK_GGUF_I16: s = (int16_t)(uint16_t)(p[0] | p[1] << 8); sgn = true; break;
    case FK_GGUF_U32: u = rd32(p); break;
    case FK_GGUF_I32: s = (int32_t)rd32(p); sgn = true; break;
    case FK_GGUF_U64: u = rd64(p); break;
    case FK_GGUF_I64: s = (int64_t)rd64(p); sgn = true; break;
    default: FK_ASSERT(!"not an integer type");
    }
    if (sgn) u = (uint64_t)s;
    *neg = sgn && s < 0;
    return u;
}

double fk_gguf_arr_f64(const fk_gguf_kv *kv, uint64_t i) {
    const unsigned char *p = elem_at(kv, i);
    if (kv->elem_type == FK_GGUF_F32) { float f; memcpy(&f, p, 4); return f; }
    if (kv->elem_type == FK_GGUF_F64) { double d; memcpy(&d, p, 8); return d; }
    bool neg;
    uint64_t u = int_at(kv, i, &neg);
    return neg ? (double)(int64_t)u : (double)u;
}

int64_t fk_gguf_arr_i64(const fk_gguf_kv *kv, uint64_t i) {
    if (kv->elem_type == FK_GGUF_F32 || kv->elem_type == FK_GGUF_F64) {  // truncated toward zero, saturated
        double d = fk_gguf_arr_f64(kv, i);
        return d != d ? 0 : d >= 9223372036854775807.0 ? INT64_MAX : d <= -9223372036854775808.0 ? INT64_MIN : (int64_t)d;
    }
    bool neg;
    return (int64_t)int_at(kv, i, &neg);
}

static const char *kv_desc(const fk_gguf_kv *kv, char *buf, size_t n) {
    if (kv->type == FK_GGUF_ARRAY) snprintf(buf, n, "an array of %s", fk_gguf_type_name(kv->elem_type));
    else snprintf(buf, n, "type %s", fk_gguf_type_name(kv->type));
    return buf;
}

static fk_status scalar(const fk_gguf *g, const char *key, const char *expected, bool (*ok)(fk_gguf_type), const fk_gguf_kv **out) {
    const fk_gguf_kv *kv = fk_gguf_find(g, key);
    if (!kv) return fk_error(FK_ERR_FORMAT, "%s: key '%s' is missing", g->path, key);
    char d[64];
    if (kv->type == FK_GGUF_ARRAY || !ok(kv->type))
        return fk_error(FK_ERR_FORMAT, "%s: key '%s' has %s, expected %s", g->path, key, kv_desc(kv, d, sizeof d), expected);
    *out = kv;
    return FK_OK;
}

static bool is_float_or_int(fk_gguf_type t) { return is_int(t) || t == FK_GGUF_F32 || t == FK_GGUF_F64; }
static bool is_bool(fk_gguf_type t) { return t == FK_GGUF_BOOL; }
static bool is_string(fk_gguf_type t) { return t == FK_GGUF_STRING; }

fk_status fk_gguf_get_u64(const fk_gguf *g, const char *key, uint64_t *v) {
    const fk_gguf_kv *kv = NULL;
    FK_TRY(scalar(g, key, "an integer", is_int, &kv));
    bool neg;
    uint64_t u = int_at(kv, 0, &neg);
    if (neg) return fk_error(FK_ERR_FORMAT, "%s: key '%s' is %lld, expected a non-negative integer", g->path, key, (long long)(int64_t)u);
    *v = u;
    return FK_OK;
}

fk_status fk_gguf_get_i64(const fk_gguf *g, const char *key, int64_t *v) {
    const fk_gguf_kv *kv = NULL;
    FK_TRY(scalar(g, key, "an integer", is_int, &kv));
    bool neg;
    uint64_t u = int_at(kv, 0, &neg);
    if (!neg && u > (uint64_t)INT64_MAX)
        return fk_error(FK_ERR_FORMAT, "%s: key '%s' is %llu, which does not fit in i64", g->path, key, (unsigned long long)u);
    *v = (int64_t)u;
    return FK_OK;
}

fk_status fk_gguf_get_f64(const fk_gguf *g, const char *key, double *v) {
    const fk_gguf_kv *kv = NULL;
    FK_TRY(scalar(g, key, "a number", is_float_or_int, &kv));
    *v = fk_gguf_arr_f64(kv, 0);
    return FK_OK;
}

fk_status fk_gguf_get_bool(const fk_gguf *g, const char *key, bool *v) {
    const fk_gguf_kv *kv = NULL;
    FK_TRY(scalar(g, key, "type bool", is_bool, &kv));
    *v = *(const unsigned char *)kv->data != 0;
    return FK_OK;
}

fk_status fk_gguf_get_str(const fk_gguf *g, const char *key, fk_gguf_str *v) {
    const fk_gguf_kv *kv = NULL;
    FK_TRY(scalar(g, key, "type string", is_string, &kv));
    *v = kv->strs[0];
    return FK_OK;
}

fk_status fk_gguf_get_arr(const fk_gguf *g, const char *key, fk_gguf_type elem, const void **data, uint64_t *count) {
    const fk_gguf_kv *kv = fk_gguf_find(g, key);
    if (!kv) return fk_error(FK_ERR_FORMAT, "%s: key '%s' is missing", g->path, key);
    if (kv->type == FK_GGUF_ARRAY && kv->elem_type == FK_GGUF_ARRAY)
        return fk_error(FK_ERR_FORMAT, "%s: key '%s' is an array of arrays, which fusekit skips and does not read", g->path, key);
    char d[64];
    if (kv->type != FK_GGUF_ARRAY || kv->elem_type != elem || elem == FK_GGUF_ARRAY)
        return fk_error(FK_ERR_FORMAT, "%s: key '%s' has %s, expected an array of %s", g->path, key, kv_desc(kv, d, sizeof d),
                        fk_gguf_type_name(elem));
    *data = elem == FK_GGUF_STRING ? (const void *)kv->strs : kv->data;
    *count = kv->count;
    return FK_OK;
}

// ---------------------------------------------------------------- writer

typedef struct {
    char *key;
    size_t key_n;
    fk_gguf_type type;
    unsigned char *val;  // serialised value (what follows the u32 type in the file)
    size_t val_n;
} wkv;

typedef struct {
    char *name;
    uint32_t n_dims, type;
    uint64_t dims[FK_GGUF_MAX_DIMS];
    const void *data;
    uint64_t nbytes;
} wtensor;

struct fk_gguf_writer {
    wkv *kvs;
    int64_t n_kv, cap_kv;
    wtensor *ts;
    int64_t n_ts, cap_ts;
};

fk_gguf_writer *fk_gguf_writer_new(void) { return calloc(1, sizeof(fk_gguf_writer)); }

void fk_gguf_writer_free(fk_gguf_writer *w) {
    if (!w) return;
    for (int64_t i = 0; i < w->n_kv; i++) { free(w->kvs[i].key); free(w->kvs[i].val); }
    for (int64_t i = 0; i < w->n_ts; i++) free(w->ts[i].name);
    free(w->kvs);
    free(w->ts);
    free(w);
}

static bool grow(void **p, int64_t *cap, int64_t n, size_t sz) {
    if (n < *cap) return true;
    int64_t c = *cap ? *cap * 2 : 16;
    void *q = realloc(*p, (size_t)c * sz);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

// Takes ownership of val (freed on failure).
static fk_status set_kv(fk_gguf_writer *w, const char *key, fk_gguf_type type, unsigned char *val, size_t val_n) {
    if (!key) { free(val); return fk_error(FK_ERR_ARG, "gguf: key is NULL"); }
    if (!val) return fk_error(FK_ERR_NOMEM, "gguf: out of memory for key '%s'", key);
    size_t kn = strlen(key);
    for (int64_t i = 0; i < w->n_kv; i++)
        if (w->kvs[i].key_n == kn && memcmp(w->kvs[i].key, key, kn) == 0) {
            free(w->kvs[i].val);
            w->kvs[i].type = type; w->kvs[i].val = val; w->kvs[i].val_n = val_n;
            return FK_OK;
        }
    char *k = strdup(key);
    if (!k || !grow((void **)&w->kvs, &w->cap_kv, w->n_kv, sizeof *w->kvs)) {
        free(k); free(val);
        return fk_error(FK_ERR_NOMEM, "gguf: out of memory for key '%s'", key);
    }
    w->kvs[w->n_kv++] = (wkv){k, kn, type, val, val_n};
    return FK_OK;
}

static fk_status set_scalar(fk_gguf_writer *w, const char *key, fk_gguf_type t, const void *v) {
    unsigned char *b = malloc(8);
    if (b) memcpy(b, v, type_sizes[t]);
    return set_kv(w, key, t, b, type_sizes[t]);
}

fk_status fk_gguf_set_u32(fk_gguf_writer *w, const char *key, uint32_t v) { return set_scalar(w, key, FK_GGUF_U32, &v); }
fk_status fk_gguf_set_i32(fk_gguf_writer *w, const char *key, int32_t v) { return set_scalar(w, key, FK_GGUF_I32, &v); }
fk_status fk_gguf_set_u64(fk_gguf_writer *w, const char *key, uint64_t v) { return set_scalar(w, key, FK_GGUF_U64, &v); }
fk_status fk_gguf_set_f32(fk_gguf_writer *w, const char *key, float v) { return set_scalar(w, key, FK_GGUF_F32, &v); }
fk_status fk_gguf_set_bool(fk_gguf_writer *w, const char *key, bool v) { uint8_t b = v; return set_scalar(w, key, FK_GGUF_BOOL, &b); }

fk_status fk_gguf_set_str(fk_gguf_writer *w, const char *key, const char *s, uint64_t n) {
    if (n && !s) return fk_error(FK_ERR_ARG, "gguf: key '%s': string is NULL", key ? key : "(null)");
    if (n > SIZE_MAX - 8) return fk_error(FK_ERR_ARG, "gguf: key '%s': string too long", key ? key : "(null)");
    unsigned char *b = malloc(8 + (size_t)n);
    if (b) { wr64(b, n); if (n) memcpy(b + 8, s, (size_t)n); }
    return set_kv(w, key, FK_GGUF_STRING, b, 8 + (size_t)n);
}

fk_status fk_gguf_set_arr(fk_gguf_writer *w, const char *key, fk_gguf_type elem, const void *data, uint64_t count) {
    if (!is_num(elem))
        return fk_error(FK_ERR_ARG, "gguf: key '%s': fk_gguf_set_arr takes numeric elements, not %s", key ? key : "(null)",
                        fk_gguf_type_name(elem));
    if (count && !data) return fk_error(FK_ERR_ARG, "gguf: key '%s': array data is NULL", key ? key : "(null)");
    if (count > (SIZE_MAX - 12) / 8) return fk_error(FK_ERR_ARG, "gguf: key '%s': array too long", key ? key : "(null)");
    size_t nb = (size_t)count * type_sizes[elem];
    unsigned char *b = malloc(12 + nb);
    if (b) { wr32(b, elem); wr64(b + 4, count); if (nb) memcpy(b + 12, data, nb); }
    return set_kv(w, key, FK_GGUF_ARRAY, b, 12 + nb);
}

fk_status fk_gguf_set_arr_str(fk_gguf_writer *w, const char *key, const char *const *strs, const uint64_t *lens, uint64_t count) {
    const char *k = key ? key : "(null)";
    if (count && (!strs || !lens)) return fk_error(FK_ERR_ARG, "gguf: key '%s': strings or lengths are NULL", k);
    size_t total = 12;
    for (uint64_t i = 0; i < count; i++) {
        if (lens[i] && !strs[i]) return fk_error(FK_ERR_ARG, "gguf: key '%s': string %llu is NULL", k, (unsigned long long)i);
        if (lens[i] > SIZE_MAX / 2 - total - 8) return fk_error(FK_ERR_ARG, "gguf: key '%s': strings too long", k);
        total += 8 + (size_t)lens[i];
    }
    unsigned char *b = malloc(total);
    if (b) {
        wr32(b, FK_GGUF_STRING); wr64(b + 4, count);
        size_t p = 12;
        for (uint64_t i = 0; i < count; i++) {
            wr64(b + p, lens[i]);
            if (lens[i]) memcpy(b + p + 8, strs[i], (size_t)lens[i]);
            p += 8 + (size_t)lens[i];
        }
    }
    return set_kv(w, key, FK_GGUF_ARRAY, b, total);
}

fk_status fk_gguf_append_arr(fk_gguf_writer *w, const char *key, const void *data, const char *const *strs, const uint64_t *lens,
                             uint64_t count) {
    size_t kn = strlen(key);
    wkv *kv = NULL;
    for (int64_t i = 0; i < w->n_kv && !kv; i++)
        if (w->kvs[i].key_n == kn && memcmp(w->kvs[i].key, key, kn) == 0) kv = &w->kvs[i];
    if (!kv || kv->type != FK_GGUF_ARRAY) return fk_error(FK_ERR_ARG, "gguf: key '%s': no array to append to", key);
    fk_gguf_type elem = (fk_gguf_type)rd32(kv->val);
    bool str = elem == FK_GGUF_STRING;
    if (str ? !strs || !lens : !data || !is_num(elem))
        return fk_error(FK_ERR_ARG, "gguf: key '%s': elements of type %s cannot be appended as given", key, fk_gguf_type_name(elem));
    size_t add = str ? 0 : (size_t)count * type_sizes[elem];
    for (uint64_t i = 0; str && i < count; i++) add += 8 + (size_t)lens[i];
    unsigned char *v = realloc(kv->val, kv->val_n + add);
    if (!v) return fk_error(FK_ERR_NOMEM, "gguf: out of memory for key '%s'", key);
    kv->val = v;
    unsigned char *p = v + kv->val_n;
    if (!str) memcpy(p, data, add);
    for (uint64_t i = 0; str && i < count; i++) {
        wr64(p, lens[i]);
        if (lens[i]) memcpy(p + 8, strs[i], (size_t)lens[i]);
        p += 8 + (size_t)lens[i];
    }
    kv->val_n += add;
    wr64(v + 4, rd64(v + 4) + count);
    return FK_OK;
}

fk_status fk_gguf_add_tensor(fk_gguf_writer *w, const char *name, uint32_t ggml_type, uint32_t n_dims, const uint64_t *dims,
                             const void *data, uint64_t nbytes) {
    const char *nm = name ? name : "(null)";
    if (!name) return fk_error(FK_ERR_ARG, "gguf: tensor name is NULL");
    if (n_dims < 1 || n_dims > FK_GGUF_MAX_DIMS)
        return fk_error(FK_ERR_ARG, "gguf: tensor '%s': %u dimensions, expected 1..%d", nm, n_dims, FK_GGUF_MAX_DIMS);
    if (nbytes && !data) return fk_error(FK_ERR_ARG, "gguf: tensor '%s': data is NULL", nm);
    uint64_t elems = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (dims[d] == 0 || dims[d] > (uint64_t)INT64_MAX / elems)
            return fk_error(FK_ERR_ARG, "gguf: tensor '%s': dimension %u (%llu) is zero or overflows", nm, d, (unsigned long long)dims[d]);
        elems *= dims[d];
    }
    uint64_t want;
    if (fk_ggml_tensor_bytes(ggml_type, dims, n_dims, &want) != FK_OK)
        return fk_error_context(FK_ERR_ARG, "gguf: tensor '%s'", nm);
    if (want != nbytes)
        return fk_error(FK_ERR_ARG, "gguf: tensor '%s': %llu elements of ggml type %s need %llu bytes, got %llu", nm,
                        (unsigned long long)elems, fk_ggml_type_name(ggml_type), (unsigned long long)want, (unsigned long long)nbytes);
    for (int64_t i = 0; i < w->n_ts; i++)
        if (strcmp(w->ts[i].name, name) == 0) return fk_error(FK_ERR_ARG, "gguf: duplicate tensor '%s'", nm);
    char *n = strdup(name);
    if (!n || !grow((void **)&w->ts, &w->cap_ts, w->n_ts, sizeof *w->ts)) {
        free(n);
        return fk_error(FK_ERR_NOMEM, "gguf: out of memory for tensor '%s'", nm);
    }
    wtensor *t = &w->ts[w->n_ts++];
    *t = (wtensor){.name = n, .n_dims = n_dims, .type = ggml_type, .data = data, .nbytes = nbytes};
    for (uint32_t d = 0; d < n_dims; d++) t->dims[d] = dims[d];
    return FK_OK;
}

static void put64(fk_afile *f, uint64_t v) { unsigned char b[8]; wr64(b, v); fk_afile_write(f, b, 8); }
static void put32(fk_afile *f, uint32_t v) { unsigned char b[4]; wr32(b, v); fk_afile_write(f, b, 4); }
static void pad(fk_afile *f, uint64_t pos, uint64_t a) {
    static const unsigned char zeros[256];
    uint64_t n = align_up(pos, a) - pos;
    fk_afile_write(f, zeros, (size_t)n);
}

fk_status fk_gguf_writer_write(fk_gguf_writer *w, const char *path) {
    uint64_t align = FK_GGUF_DEFAULT_ALIGNMENT;  // honour a general.alignment the caller set
    for (int64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kvs[i].key, "general.alignment") == 0) {
            uint32_t a = w->kvs[i].type == FK_GGUF_U32 ? rd32(w->kvs[i].val) : 0;
            if (a == 0 || (a & (a - 1)) || a > 256)
                return fk_error(FK_ERR_ARG, "%s: general.alignment must be a u32 power of two up to 256", path);
            align = a;
        }
    fk_afile f;
    FK_TRY(fk_afile_open(&f, path));
    uint64_t pos = 24;
    fk_afile_write(&f, "GGUF", 4);
    put32(&f, 3);
    put64(&f, (uint64_t)w->n_ts);
    put64(&f, (uint64_t)w->n_kv);
    for (int64_t i = 0; i < w->n_kv; i++) {
        const wkv *k = &w->kvs[i];
        put64(&f, k->key_n);
        fk_afile_write(&f, k->key, k->key_n);
        put32(&f, k->type);
        fk_afile_write(&f, k->val, k->val_n);
        pos += 8 + k->key_n + 4 + k->val_n;
    }
    uint64_t off = 0;
    for (int64_t i = 0; i < w->n_ts; i++) {
        const wtensor *t = &w->ts[i];
        size_t nn = strlen(t->name);
        put64(&f, nn);
        fk_afile_write(&f, t->name, nn);
        put32(&f, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) put64(&f, t->dims[d]);
        put32(&f, t->type);
        put64(&f, off);
        off = align_up(off + t->nbytes, align);
        pos += 8 + nn + 4 + 8 * t->n_dims + 4 + 8;
    }
    pad(&f, pos, align);
    for (int64_t i = 0; i < w->n_ts; i++) {
        fk_afile_write(&f, w->ts[i].data, (size_t)w->ts[i].nbytes);
        pad(&f, w->ts[i].nbytes, align);
    }
    if (f.failed) { fk_afile_abort(&f); return FK_ERR_IO; }
    return fk_afile_commit(&f);
}
