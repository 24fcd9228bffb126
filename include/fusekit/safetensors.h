// safetensors: the Hugging Face tensor file. 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then raw data.
// Files are read through mmap; writes are atomic.
#ifndef FUSEKIT_SAFETENSORS_H
#define FUSEKIT_SAFETENSORS_H

#include "fusekit/base.h"

typedef enum { FK_DT_F32, FK_DT_F16, FK_DT_BF16, FK_DT_F64, FK_DT_I64, FK_DT_I32, FK_DT_I16,
               FK_DT_I8, FK_DT_U8, FK_DT_BOOL, FK_DT_COUNT } fk_dtype;

const char *fk_dtype_name(fk_dtype dt);   // safetensors spelling: "F32", "BF16", ...
size_t fk_dtype_size(fk_dtype dt);
bool fk_dtype_parse(const char *s, fk_dtype *dt);

#define FK_MAX_DIMS 8

typedef struct {
    char *name;
    fk_dtype dtype;
    int ndim;
    int64_t shape[FK_MAX_DIMS];
    int64_t numel;
    size_t nbytes;
    const void *data;  // points into the mapping
} fk_st_tensor;

typedef struct {
    char *path;
    fk_mmap map;
    int n_tensors;
    fk_st_tensor *tensors;
    char *metadata_json;  // the "__metadata__" object as JSON text, or NULL
} fk_safetensors;

// Opens and validates a file: header bounds, dtypes, shapes against byte ranges, ranges
// inside the file (a truncated file is reported with the tensor that runs past its end).
fk_status fk_st_open(fk_safetensors *st, const char *path);
void fk_st_close(fk_safetensors *st);
const fk_st_tensor *fk_st_find(const fk_safetensors *st, const char *name);
// The safetensors files of a model folder: model.safetensors, else the shards that
// model.safetensors.index.json's weight_map names (each file once; a name must be a file
// inside the folder). Neither there: FK_ERR_IO naming DIR/model.safetensors.
typedef struct {
    int n;
    fk_safetensors *st;
} fk_st_set;
fk_status fk_st_set_open(fk_st_set *s, const char *dir);
void fk_st_set_close(fk_st_set *s);
// The tensor called name in any file of the set (NULL if none); *path (may be NULL) gets its file.
const fk_st_tensor *fk_st_set_find(const fk_st_set *s, const char *name, const char **path);
// Converts a tensor of any float dtype to f32 into `out` (t->numel values).
fk_status fk_st_to_f32(const fk_st_tensor *t, float *out);

typedef struct {
    const char *name;
    fk_dtype dtype;
    int ndim;
    int64_t shape[FK_MAX_DIMS];
    const void *data;  // numel * dtype size bytes
} fk_st_entry;

// Writes tensors atomically. metadata_json: a JSON object of string values, or NULL.
fk_status fk_st_write(const char *path, const fk_st_entry *entries, int n, const char *metadata_json);
// The start of such a file, for a writer that streams the tensors' bytes itself (fk_merge):
// the 8-byte length, then the JSON header ("__metadata__" first when given; data_offsets in
// the entries' order; entries' data unused) padded with spaces to a multiple of 8. *out is
// malloc'd, *len bytes.
fk_status fk_st_header(const fk_st_entry *entries, int n, const char *metadata_json, char **out, size_t *len);

#endif
