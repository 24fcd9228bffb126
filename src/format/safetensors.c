// safetensors reader (mmap, validated) and atomic writer.
#include "fusekit/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *dtype_names[FK_DT_COUNT] = {"F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"};
static const size_t dtype_sizes[FK_DT_COUNT] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};

const char *fk_dtype_name(fk_dtype dt) { return dt < FK_DT_COUNT ? dtype_names[dt] : "?"; }
size_t fk_dtype_size(fk_dtype dt) { return dt < FK_DT_COUNT ? dtype_sizes[dt] : 0; }

bool fk_dtype_parse(const char *s, fk_dtype *dt) {
    for (int i = 0; i < FK_DT_COUNT; i++)
        if (strcmp(s, dtype_names[i]) == 0) { *dt = (fk_dtype)i; return true; }
    return false;
}

void fk_st_close(fk_safetensors *st) {
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    free(st->metadata_json);
    free(st->path);
    fk_mmap_close(&st->map);
    memset(st, 0, sizeof *st);
}

static fk_status parse_entry(fk_safetensors *st, const cJSON *item, const unsigned char *data, size_t data_size,
                             fk_st_tensor *t) {
    const char *p = st->path, *name = item->string;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt) || !fk_dtype_parse(dt->valuestring, &t->dtype))
        return fk_error(FK_ERR_FORMAT, "%s: tensor %s: missing or unknown dtype %s", p, name,
                        cJSON_IsString(dt) ? dt->valuestring : "(none)");
    if (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) > FK_MAX_DIMS)
        return fk_error(FK_ERR_FORMAT, "%s: tensor %s: shape must be an array of at most %d integers", p, name, FK_MAX_DIMS);
    t->ndim = cJSON_GetArraySize(shape);
    t->numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        const cJSON *s = cJSON_GetArrayItem(shape, d);
        if (!cJSON_IsNumber(s) || !(s->valuedouble >= 0 && s->valuedouble <= 1e15) || s->valuedouble != floor(s->valuedouble))
            return fk_error(FK_ERR_FORMAT, "%s: tensor %s: shape entry %d is not an integer in 0..1e15", p, name, d);
        t->shape[d] = (int64_t)s->valuedouble;
        if (t->shape[d] > 0 && t->numel > INT64_MAX / 8 / t->shape[d])
            return fk_error(FK_ERR_FORMAT, "%s: tensor %s: shape is too large (its element count overflows)", p, name);
        t->numel *= t->shape[d];
    }
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return fk_error(FK_ERR_FORMAT, "%s: tensor %s: data_offsets must be [begin, end]", p, name);
    const cJSON *ob = cJSON_GetArrayItem(offs, 0), *oe = cJSON_GetArrayItem(offs, 1);
    if (!cJSON_IsNumber(ob) || !cJSON_IsNumber(oe))
        return fk_error(FK_ERR_FORMAT, "%s: tensor %s: data_offsets must be two integers", p, name);
    double b = ob->valuedouble, e = oe->valuedouble;
    if (!(b >= 0 && e >= b) || b != floor(b) || e != floor(e))
        return fk_error(FK_ERR_FORMAT, "%s: tensor %s: bad data_offsets [%.17g, %.17g] (expected integers 0 <= begin <= end)", p, name, b, e);
    if (e > (double)data_size)
        return fk_error(FK_ERR_FORMAT, "%s: truncated: tensor %s needs data bytes up to %.0f but the file holds %zu",
                        p, name, e, data_size);
    t->nbytes = (size_t)e - (size_t)b;
    uint64_t want = (uint64_t)t->numel * fk_dtype_size(t->dtype);  // numel < 2^63 / 8: no overflow
    if (want != t->nbytes)
        return fk_error(FK_ERR_FORMAT, "%s: tensor %s: shape has %lld elements of %s (%llu bytes) but data_offsets span %zu bytes",
                        p, name, (long long)t->numel, fk_dtype_name(t->dtype), (unsigned long long)want, t->nbytes);
    t->data = data + (size_t)b;
    t->name = strdup(name);
    return t->name ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

// cJSON keeps every duplicate key (the first would win lookups, the others be shadowed, a
// second __metadata__ leak): refuse them, in n log n.
static fk_status check_unique_keys(const cJSON *root, int n, const char *path) {
    const char **names = malloc((size_t)(n ? n : 1) * sizeof *names);
    if (!names) return fk_error(FK_ERR_NOMEM, "out of memory reading the header of %s", path);
    int i = 0;
    for (const cJSON *it = root->child; it && i < n; it = it->next) names[i++] = it->string;
    qsort(names, (size_t)i, sizeof *names, cmp_str);
    fk_status st = FK_OK;
    for (int j = 1; j < i && st == FK_OK; j++)
        if (strcmp(names[j - 1], names[j]) == 0)
            st = fk_error(FK_ERR_FORMAT, "%s: header has the key \"%s\" more than once%s", path, names[j],
                          strcmp(names[j], "__metadata__") == 0 ? "" : " (a tensor name must be unique)");
    free(names);
    return st;
}

static int cmp_by_data(const void *a, const void *b) {
    const fk_st_tensor *x = *(const fk_st_tensor *const *)a, *y = *(const fk_st_tensor *const *)b;
    return (x->data > y->data) - (x->data < y->data);
}

// Tensors' byte ranges must not overlap (as the safetensors library requires): one tensor's
// bytes read as another's is a malformed file.
static fk_status check_disjoint(const fk_safetensors *st) {
    if (st->n_tensors < 2) return FK_OK;
    const fk_st_tensor **v = malloc((size_t)st->n_tensors * sizeof *v);
    if (!v) return fk_error(FK_ERR_NOMEM, "out of memory reading the header of %s", st->path);
    for (int i = 0; i < st->n_tensors; i++) v[i] = &st->tensors[i];
    qsort(v, (size_t)st->n_tensors, sizeof *v, cmp_by_data);
    fk_status rc = FK_OK;
    for (int i = 1; i < st->n_tensors && rc == FK_OK; i++)
        if (v[i]->data < v[i - 1]->data + v[i - 1]->nbytes)
            rc = fk_error(FK_ERR_FORMAT, "%s: tensors %s and %s overlap in the data (their data_offsets)", st->path, v[i - 1]->name, v[i]->name);
    free(v);
    return rc;
}

fk_status fk_st_open(fk_safetensors *st, const char *path) {
    memset(st, 0, sizeof *st);
    FK_TRY(fk_mmap_open(&st->map, path));
    st->path = strdup(path);
    const unsigned char *base = st->map.data;
    uint64_t hlen = 0;
    if (st->map.size < 8) {
        size_t sz = st->map.size;
        fk_st_close(st);
        return fk_error(FK_ERR_FORMAT, "%s: not a safetensors file (only %zu bytes)", path, sz);
    }
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | base[i];
    if (hlen > 100000000ull || 8 + hlen > st->map.size) {
        size_t sz = st->map.size;
        fk_st_close(st);
        return fk_error(FK_ERR_FORMAT, "%s: header length %llu does not fit in the file (%zu bytes): truncated or not safetensors",
                        path, (unsigned long long)hlen, sz);
    }
    cJSON *root = NULL;
    fk_status pst = fk_json_parse(path, (const char *)base + 8, (size_t)hlen, &root);
    if (pst != FK_OK || !cJSON_IsObject(root)) {
        cJSON_Delete(root); fk_st_close(st);
        if (pst != FK_OK && strstr(fk_last_error(), "nested deeper")) return pst;
        return pst != FK_OK ? fk_error_context(pst, "%s: header is not a JSON object", path)
                            : fk_error(FK_ERR_FORMAT, "%s: header is not a JSON object", path);
    }
    int n = cJSON_GetArraySize(root);
    st->tensors = calloc((size_t)n + 1, sizeof *st->tensors);
    fk_status rc = st->tensors ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory reading the header of %s (%d entries)", path, n);
    if (rc == FK_OK) rc = check_unique_keys(root, n, path);
    const cJSON *item;
    if (rc == FK_OK) cJSON_ArrayForEach(item, root) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(item)) { rc = fk_error(FK_ERR_FORMAT, "%s: __metadata__ is not an object", path); break; }
            st->metadata_json = cJSON_PrintUnformatted(item);
            if (!st->metadata_json) { rc = fk_error(FK_ERR_NOMEM, "out of memory reading the metadata of %s", path); break; }
            continue;
        }
        if (!cJSON_IsObject(item)) { rc = fk_error(FK_ERR_FORMAT, "%s: header entry %s is not an object", path, item->string); break; }
        rc = parse_entry(st, item, base + 8 + hlen, st->map.size - 8 - (size_t)hlen, &st->tensors[st->n_tensors]);
        if (rc != FK_OK) break;
        st->n_tensors++;
    }
    cJSON_Delete(root);
    if (rc == FK_OK) rc = check_disjoint(st);
    if (rc != FK_OK) { fk_st_close(st); return rc; }
    return FK_OK;
}

const fk_st_tensor *fk_st_find(const fk_safetensors *st, const char *name) {
    for (int i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

fk_status fk_st_to_f32(const fk_st_tensor *t, float *out) {
    const unsigned char *p = t->data;
    int64_t n = t->numel;
    switch (t->dtype) {
    case FK_DT_F32: memcpy(out, p, (size_t)n * 4); break;
    case FK_DT_F16: for (int64_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, p + 2 * i, 2); out[i] = fk_f16_to_f32(h); } break;
    case FK_DT_BF16: for (int64_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, p + 2 * i, 2); out[i] = fk_bf16_to_f32(h); } break;
    case FK_DT_F64: for (int64_t i = 0; i < n; i++) { double d; memcpy(&d, p + 8 * i, 8); out[i] = (float)d; } break;
    default:
        return fk_error(FK_ERR_FORMAT, "tensor %s has dtype %s but a floating-point dtype (F32, F16, BF16) was expected",
                        t->name, fk_dtype_name(t->dtype));
    }
    return FK_OK;
}

static size_t entry_bytes(const fk_st_entry *e) {
    int64_t numel = 1;
    for (int d = 0; d < e->ndim; d++) numel *= e->shape[d];
    return (size_t)numel * fk_dtype_size(e->dtype);
}

fk_status fk_st_header(const fk_st_entry *entries, int n, const char *metadata_json, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    cJSON *root = cJSON_CreateObject();
    if (metadata_json) {
        cJSON *meta = cJSON_Parse(metadata_json);
        if (!meta) { cJSON_Delete(root); return fk_error(FK_ERR_ARG, "safetensors metadata is not valid JSON"); }
        cJSON_AddItemToObject(root, "__metadata__", meta);
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const fk_st_entry *e = &entries[i];
        size_t nb = entry_bytes(e);
        cJSON *t = cJSON_CreateObject(), *shape = cJSON_CreateArray(), *offs = cJSON_CreateArray();
        cJSON_AddStringToObject(t, "dtype", fk_dtype_name(e->dtype));
        for (int d = 0; d < e->ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e->shape[d]));
        cJSON_AddItemToObject(t, "shape", shape);
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + nb)));
        cJSON_AddItemToObject(t, "data_offsets", offs);
        cJSON_AddItemToObject(root, e->name, t);
        off += nb;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    size_t hl = json ? strlen(json) : 0, padded = (hl + 7) & ~(size_t)7;
    char *h = json ? malloc(8 + padded) : NULL;
    if (!h) { free(json); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    for (int i = 0; i < 8; i++) h[i] = (char)(unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(h + 8, json, hl);
    memset(h + 8 + hl, ' ', padded - hl);
    free(json);
    *out = h;
    *len = 8 + padded;
    return FK_OK;
}

fk_status fk_st_write(const char *path, const fk_st_entry *entries, int n, const char *metadata_json) {
    char *hdr;
    size_t hlen;
    FK_TRY(fk_st_header(entries, n, metadata_json, &hdr, &hlen));
    fk_afile f;
    fk_status rc = fk_afile_open(&f, path);
    if (rc != FK_OK) { free(hdr); return rc; }
    fk_afile_write(&f, hdr, hlen);
    free(hdr);
    for (int i = 0; i < n; i++) fk_afile_write(&f, entries[i].data, entry_bytes(&entries[i]));
    if (f.failed) { fk_afile_abort(&f); return FK_ERR_IO; }
    return fk_afile_commit(&f);
}

// ------------------------------------------------------------------ a model folder's files

void fk_st_set_close(fk_st_set *s) {
    for (int i = 0; i < s->n; i++) fk_st_close(&s->st[i]);
    free(s->st);
    s->n = 0;
    s->st = NULL;
}

// Opens each file the index's weight_map names, once (s->st has room for every entry).
static fk_status set_open_shards(fk_st_set *s, const char *dir, const char *index, const cJSON *map) {
    const cJSON *it;
    cJSON_ArrayForEach(it, map) {
        if (!cJSON_IsString(it) || strstr(it->valuestring, "..") || strchr(it->valuestring, '/'))
            return fk_error(FK_ERR_FORMAT, "%s: weight_map entry %s is not a file name inside the folder", index, it->string);
        char *p = fk_path_join(dir, it->valuestring);
        if (!p) return fk_error(FK_ERR_NOMEM, "out of memory");
        bool seen = false;
        for (int i = 0; i < s->n && !seen; i++) seen = strcmp(s->st[i].path, p) == 0;
        fk_status st = seen ? FK_OK : fk_st_open(&s->st[s->n], p);
        free(p);
        if (st != FK_OK) return fk_error_context(st, "%s: weight_map puts %s in %s", index, it->string, it->valuestring);
        if (!seen) s->n++;
    }
    return FK_OK;
}

fk_status fk_st_set_open(fk_st_set *s, const char *dir) {
    memset(s, 0, sizeof *s);
    char *single = fk_path_join(dir, "model.safetensors"), *index = fk_path_join(dir, "model.safetensors.index.json");
    fk_status st = single && index ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    if (st == FK_OK && fk_path_exists(single)) {
        s->st = calloc(1, sizeof *s->st);
        st = s->st ? fk_st_open(&s->st[0], single) : fk_error(FK_ERR_NOMEM, "out of memory");
        if (st == FK_OK) s->n = 1;
    } else if (st == FK_OK && fk_path_exists(index)) {
        char *json = NULL;
        cJSON *root = NULL;
        st = fk_read_file(index, &json, NULL);
        if (st == FK_OK) st = fk_json_parse(index, json, strlen(json), &root);
        const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
        if (st == FK_OK && !cJSON_IsObject(map)) st = fk_error(FK_ERR_FORMAT, "%s: missing object \"weight_map\"", index);
        if (st == FK_OK && !(s->st = calloc((size_t)cJSON_GetArraySize(map) + 1, sizeof *s->st)))
            st = fk_error(FK_ERR_NOMEM, "out of memory");
        if (st == FK_OK) st = set_open_shards(s, dir, index, map);
        cJSON_Delete(root);
        free(json);
    } else if (st == FK_OK) {
        st = fk_error(FK_ERR_IO, "%s: no such file, and no model.safetensors.index.json beside it", single);
    }
    free(single);
    free(index);
    if (st != FK_OK) fk_st_set_close(s);
    return st;
}

const fk_st_tensor *fk_st_set_find(const fk_st_set *s, const char *name, const char **path) {
    for (int i = 0; i < s->n; i++) {
        const fk_st_tensor *t = fk_st_find(&s->st[i], name);
        if (t) {
            if (path) *path = s->st[i].path;
            return t;
        }
    }
    return NULL;
}
