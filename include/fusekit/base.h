// fusekit base: status codes and error messages, random numbers, half floats,
// atomic file writes, timing. The library never prints or exits; every fallible
// function returns an fk_status and leaves a message in fk_last_error().
#ifndef FUSEKIT_BASE_H
#define FUSEKIT_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    FK_OK = 0,
    FK_ERR_IO,       // a file could not be opened, read or written
    FK_ERR_FORMAT,   // a file's contents are malformed or inconsistent
    FK_ERR_ARG,      // a caller passed an invalid argument or option
    FK_ERR_NOMEM,    // an allocation failed
    FK_ERR_NUMERIC,  // NaN or Inf appeared
    FK_ERR_UNSUPPORTED,
} fk_status;

// Records a printf-style message for the calling thread and returns `st`.
fk_status fk_error(fk_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Prepends "prefix: " to the current message (adds context on the way up); returns st.
fk_status fk_error_context(fk_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// The calling thread's last error message ("" when none).
const char *fk_last_error(void);
const char *fk_status_name(fk_status st);

#define FK_TRY(expr) do { fk_status fk_try_st_ = (expr); if (fk_try_st_ != FK_OK) return fk_try_st_; } while (0)

// Programmer errors (broken invariants), not data errors: abort with file and line.
#define FK_ASSERT(c) do { if (!(c)) fk_assert_fail(#c, __FILE__, __LINE__); } while (0)
void fk_assert_fail(const char *cond, const char *file, int line) __attribute__((noreturn));

// Allocation that reports failure through the status mechanism. 64-byte aligned, zeroed.
void *fk_calloc_aligned(size_t bytes);
// Zeroed, page-aligned memory straight from the kernel: its pages become resident only when
// written, so an arena of which parts are never touched (a frozen model's stored matrices, a
// KV cache for a context never reached) costs only what is used. NULL when out of memory.
// Free with fk_free_pages and the same byte count. (Under AddressSanitizer: calloc, so that
// ASan checks accesses, 16-byte aligned, for blocks up to the machine's memory size.)
void *fk_alloc_pages(size_t bytes);
// The same for a block most of which is never written (a frozen model's arena, whose stored
// matrices' rows stay untouched): MAP_NORESERVE, so that under Linux's default overcommit
// heuristic a 7B model's 27 GB f32 arena is not refused on a 24 GB machine; only the pages
// written are ever backed. Free with fk_free_pages.
void *fk_alloc_pages_sparse(size_t bytes);
void fk_free_pages(void *p, size_t bytes);

// ---------------------------------------------------------------- random numbers
// xoshiro256** seeded through splitmix64: small state, good quality, reproducible.
// Sparse probability distributions, one row per position (compressed rows): position i has
// the entries [row[i], row[i+1]) of (ids, p); a row's p sum to 1; an empty row has none.
typedef struct {
    const int64_t *row;
    const int32_t *ids;
    const float *p;
} fk_sparse_dist;
// The logit of a padding row of the LM head (a row no token of the tokenizer has: Qwen2.5,
// Phi-3): finite, and far enough below any real logit that its softmax probability is 0.
#define FK_LOGIT_MASKED (-1e30f)

typedef struct { uint64_t s[4]; } fk_rng;
void fk_rng_seed(fk_rng *r, uint64_t seed);
uint64_t fk_rng_u64(fk_rng *r);
float fk_rng_uniform(fk_rng *r);              // [0, 1)
float fk_rng_normal(fk_rng *r);               // N(0, 1)
uint64_t fk_rng_below(fk_rng *r, uint64_t n); // uniform in [0, n)
uint64_t fk_hash64(uint64_t x);               // splitmix64 finaliser
uint64_t fk_fnv1a64(const void *data, size_t n, uint64_t h); // h = 0 starts a new hash

// ---------------------------------------------------------------- half floats
uint16_t fk_f32_to_f16(float f);
float fk_f16_to_f32(uint16_t h);
uint16_t fk_f32_to_bf16(float f);  // round to nearest even
float fk_bf16_to_f32(uint16_t h);

// ---------------------------------------------------------------- files
// Atomic write: data goes to "<path>.tmp.<pid>", is flushed and fsynced, then renamed
// over <path>. On any failure the temporary is removed and <path> is untouched.
typedef struct {
    FILE *fp;
    char *path;
    char *tmp_path;
    bool failed;
} fk_afile;
fk_status fk_afile_open(fk_afile *f, const char *path);
fk_status fk_afile_write(fk_afile *f, const void *data, size_t n);
fk_status fk_afile_commit(fk_afile *f);  // fsync + rename; frees f
void fk_afile_abort(fk_afile *f);        // removes the temporary; frees f
fk_status fk_write_file_atomic(const char *path, const void *data, size_t n);
// fk_write_file_atomic to dir/name.
fk_status fk_write_file_in(const char *dir, const char *name, const void *data, size_t n);
// Reads a whole file into a NUL-terminated malloc'd buffer.
fk_status fk_read_file(const char *path, char **data, size_t *n);
// Memory-maps a file read-only. It and fk_read_file refuse at once, naming the file, what is
// not a regular file (a FIFO, which would block, a directory, a device such as /dev/zero).
typedef struct { void *data; size_t size; } fk_mmap;
fk_status fk_mmap_open(fk_mmap *m, const char *path);
void fk_mmap_close(fk_mmap *m);
// JSON files: text read from `path` parsed with cJSON (free with cJSON_Delete). Nesting deeper
// than FK_JSON_MAX_DEPTH is refused as "PATH: JSON nested deeper than N levels"; invalid JSON
// ("not valid JSON") names the byte and line where parsing stopped.
#define FK_JSON_MAX_DEPTH 512
struct cJSON;
fk_status fk_json_parse(const char *path, const char *text, size_t n, struct cJSON **out);
fk_status fk_json_read(const char *path, struct cJSON **out);
// j written to dir/name atomically, indented (cJSON_Print), then deleted.
fk_status fk_json_write_in(const char *dir, const char *name, struct cJSON *j);
bool fk_path_exists(const char *path);
fk_status fk_mkdir_p(const char *path);
// "dir/name" in a malloc'd string.
char *fk_path_join(const char *dir, const char *name);
// fsync a directory so a rename inside it is durable.
void fk_fsync_dir(const char *dir);
// fsync the folder that holds `path` (a file or a folder), so a rename to `path` is durable.
void fk_fsync_parent(const char *path);
// Removes a file or a folder tree (links not followed); FK_OK when it was absent.
fk_status fk_remove_tree(const char *path);
// Puts the complete folder tmp in the place of dir, durably: tmp is fsynced, an existing dir
// (a folder cannot be renamed over a non-empty one) is renamed to `old` (whatever was there
// removed first), tmp is renamed to dir, dir's parent fsynced, then old removed. remove_old
// removes a folder (fk_remove_tree when NULL; a caller may remove its files in an order of its
// own). On failure the old folder is back at dir and tmp is left for the caller to remove.
fk_status fk_dir_replace(const char *tmp, const char *dir, const char *old, void (*remove_old)(const char *path));

// ---------------------------------------------------------------- time and memory
double fk_time_s(void);          // monotonic seconds
double fk_peak_rss_mb(void);     // peak resident set size of this process
// Physical cores this process may run on: the CPUs of its affinity mask counted once per
// (package, core) pair (/sys/devices/system/cpu/cpuN/topology), so SMT siblings count once;
// the CPUs of the mask when the topology is not readable; at least 1.
int fk_physical_cores(void);
// Bytes this process may still allocate: FK_MEM_LIMIT_MB (MiB) when set, else MemAvailable
// from /proc/meminfo, else the free physical pages; 0 when unknown.
uint64_t fk_mem_available_bytes(void);
// FK_ERR_NOMEM "<what> needs 31.2 GB, 22.8 GB available" when bytes exceed fk_mem_available_bytes()
// (never when that is unknown).
fk_status fk_mem_check(const char *what, double bytes);
// The same, the message followed by "; " and hint, in which one "%s" (if any) becomes alt_bytes
// formatted as above: the option that would fit, e.g. "--optim-state bf16 needs %s".
fk_status fk_mem_check_hint(const char *what, double bytes, const char *hint, double alt_bytes);

#endif
