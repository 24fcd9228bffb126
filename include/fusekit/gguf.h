// GGUF (version 2 and 3) reader and writer: typed key/value metadata, tensor
// descriptors and tensor data. The reader maps the file read-only and checks every
// length and offset against the file size before it trusts it; the writer collects
// keys and tensors in memory and writes the file atomically.
//
// Layout (little-endian): magic "GGUF", u32 version, u64 tensor count, u64 kv count;
// kvs: string key, u32 type, value; tensor infos: string name, u32 n_dims,
// u64 dims[n_dims] (fastest-varying first, ggml order), u32 ggml type, u64 offset
// (relative to the data section); padding to general.alignment (default 32); data.
// A string is u64 length + bytes (no terminator). An array is u32 element type,
// u64 count, elements.
#ifndef FUSEKIT_GGUF_H
#define FUSEKIT_GGUF_H

#include "fusekit/base.h"

typedef enum {
    FK_GGUF_U8 = 0,
    FK_GGUF_I8 = 1,
    FK_GGUF_U16 = 2,
    FK_GGUF_I16 = 3,
    FK_GGUF_U32 = 4,
    FK_GGUF_I32 = 5,
    FK_GGUF_F32 = 6,
    FK_GGUF_BOOL = 7,
    FK_GGUF_STRING = 8,
    FK_GGUF_ARRAY = 9,
    FK_GGUF_U64 = 10,
    FK_GGUF_I64 = 11,
    FK_GGUF_F64 = 12,
} fk_gguf_type;

// ggml tensor type ids (ggml.h's enum ggml_type). fusekit/quants.h has their block sizes
// and dequantization; the ids without a name here are known by size only.
enum {
    FK_GGML_F32 = 0, FK_GGML_F16 = 1, FK_GGML_Q4_0 = 2, FK_GGML_Q4_1 = 3, FK_GGML_Q5_0 = 6, FK_GGML_Q5_1 = 7,
    FK_GGML_Q8_0 = 8, FK_GGML_Q8_1 = 9, FK_GGML_Q2_K = 10, FK_GGML_Q3_K = 11, FK_GGML_Q4_K = 12, FK_GGML_Q5_K = 13,
    FK_GGML_Q6_K = 14, FK_GGML_Q8_K = 15, FK_GGML_IQ4_NL = 20, FK_GGML_IQ4_XS = 23, FK_GGML_BF16 = 30,
    FK_GGML_TYPE_COUNT = 42  // ids at or above this are unknown
};

#define FK_GGUF_MAX_DIMS 4
#define FK_GGUF_DEFAULT_ALIGNMENT 32

// A string inside the mapped file: not NUL-terminated.
typedef struct {
    const char *s;
    uint64_t n;
} fk_gguf_str;

typedef struct {
    fk_gguf_str key;
    fk_gguf_type type;       // FK_GGUF_ARRAY for arrays
    fk_gguf_type elem_type;  // element type of an array; == type for a scalar
    uint64_t count;          // array length; 1 for a scalar
    const void *data;        // scalar or array payload inside the map (numbers: packed little-endian)
    fk_gguf_str *strs;       // strings of a string array, or the one string of a string scalar (malloc'd index)
} fk_gguf_kv;

typedef struct {
    fk_gguf_str name;
    uint32_t n_dims;
    uint64_t dims[FK_GGUF_MAX_DIMS];  // ggml order: dims[0] varies fastest
    uint32_t ggml_type;
    uint64_t offset;                  // from the start of the data section
    uint64_t nbytes;                  // from the type's block size (fk_ggml_tensor_bytes)
    const void *data;                 // inside the map
} fk_gguf_tensor;

typedef struct {
    char *path;
    fk_mmap map;
    uint32_t version;
    uint64_t alignment;
    fk_gguf_kv *kvs;
    int64_t n_kv;
    fk_gguf_tensor *tensors;
    int64_t n_tensors;
    uint64_t data_offset;  // file offset of the data section
} fk_gguf;

// Opens and validates a GGUF file. Errors name the file and the key or tensor at fault.
fk_status fk_gguf_open(const char *path, fk_gguf *g);
void fk_gguf_close(fk_gguf *g);

const fk_gguf_kv *fk_gguf_find(const fk_gguf *g, const char *key);
const fk_gguf_tensor *fk_gguf_find_tensor(const fk_gguf *g, const char *name);
const char *fk_gguf_type_name(fk_gguf_type t);

// Typed getters. Each returns FK_ERR_FORMAT naming the file and key when the key is
// absent or of the wrong type, or FK_OK and the value. Integer getters accept any
// integer type whose value fits; fk_gguf_get_f64 accepts f32, f64 and integers.
fk_status fk_gguf_get_u64(const fk_gguf *g, const char *key, uint64_t *v);
fk_status fk_gguf_get_i64(const fk_gguf *g, const char *key, int64_t *v);
fk_status fk_gguf_get_f64(const fk_gguf *g, const char *key, double *v);
fk_status fk_gguf_get_bool(const fk_gguf *g, const char *key, bool *v);
fk_status fk_gguf_get_str(const fk_gguf *g, const char *key, fk_gguf_str *v);
// An array of `elem` elements; *count is its length. For FK_GGUF_STRING, *data is an
// fk_gguf_str array; otherwise packed little-endian numbers inside the map.
fk_status fk_gguf_get_arr(const fk_gguf *g, const char *key, fk_gguf_type elem, const void **data, uint64_t *count);
// Reads element i of a numeric array as double / int64 (any numeric element type).
double fk_gguf_arr_f64(const fk_gguf_kv *kv, uint64_t i);
int64_t fk_gguf_arr_i64(const fk_gguf_kv *kv, uint64_t i);

// ---------------------------------------------------------------- writer
typedef struct fk_gguf_writer fk_gguf_writer;

fk_gguf_writer *fk_gguf_writer_new(void);  // NULL when out of memory
void fk_gguf_writer_free(fk_gguf_writer *w);
// Keys keep the order they were added in; adding a key twice replaces its value.
// Strings are copied; `n` is the byte length (strings may hold any bytes).
fk_status fk_gguf_set_u32(fk_gguf_writer *w, const char *key, uint32_t v);
fk_status fk_gguf_set_i32(fk_gguf_writer *w, const char *key, int32_t v);
fk_status fk_gguf_set_u64(fk_gguf_writer *w, const char *key, uint64_t v);
fk_status fk_gguf_set_f32(fk_gguf_writer *w, const char *key, float v);
fk_status fk_gguf_set_bool(fk_gguf_writer *w, const char *key, bool v);
fk_status fk_gguf_set_str(fk_gguf_writer *w, const char *key, const char *s, uint64_t n);
// Numeric array: `data` holds `count` packed elements of `elem` in host order (little-endian).
fk_status fk_gguf_set_arr(fk_gguf_writer *w, const char *key, fk_gguf_type elem, const void *data, uint64_t count);
fk_status fk_gguf_set_arr_str(fk_gguf_writer *w, const char *key, const char *const *strs, const uint64_t *lens,
                              uint64_t count);
// Appends count elements to the array already set at key: strs/lens for an array of strings,
// else data, count packed elements of the array's type. FK_ERR_ARG when key holds no array.
fk_status fk_gguf_append_arr(fk_gguf_writer *w, const char *key, const void *data, const char *const *strs, const uint64_t *lens,
                             uint64_t count);
// Adds a tensor; `data` (nbytes) is referenced, not copied, and must stay valid until
// fk_gguf_writer_write returns. dims are in ggml order (dims[0] fastest).
fk_status fk_gguf_add_tensor(fk_gguf_writer *w, const char *name, uint32_t ggml_type, uint32_t n_dims,
                             const uint64_t *dims, const void *data, uint64_t nbytes);
// Writes GGUF v3 atomically (temporary name, fsync, rename).
fk_status fk_gguf_writer_write(fk_gguf_writer *w, const char *path);

#endif
