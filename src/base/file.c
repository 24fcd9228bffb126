// Files: atomic writes (temp + fsync + rename), whole-file reads, mmap, paths, timing.
#include "fusekit/base.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

fk_status fk_afile_open(fk_afile *f, const char *path) {
    memset(f, 0, sizeof *f);
    size_t n = strlen(path) + 32;
    f->path = strdup(path);
    f->tmp_path = malloc(n);
    if (!f->path || !f->tmp_path) { free(f->path); free(f->tmp_path); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    snprintf(f->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    f->fp = fopen(f->tmp_path, "wb");
    if (!f->fp) {
        fk_status st = fk_error(FK_ERR_IO, "cannot create %s: %s", f->tmp_path, strerror(errno));
        free(f->path); free(f->tmp_path);
        memset(f, 0, sizeof *f);
        return st;
    }
    return FK_OK;
}

fk_status fk_afile_write(fk_afile *f, const void *data, size_t n) {
    if (f->failed) return FK_ERR_IO;
    if (n && fwrite(data, 1, n, f->fp) != n) {
        f->failed = true;
        return fk_error(FK_ERR_IO, "cannot write %s: %s", f->tmp_path, strerror(errno));
    }
    return FK_OK;
}

static void afile_free(fk_afile *f) {
    free(f->path); free(f->tmp_path);
    memset(f, 0, sizeof *f);
}

void fk_afile_abort(fk_afile *f) {
    if (f->fp) fclose(f->fp);
    if (f->tmp_path) unlink(f->tmp_path);
    afile_free(f);
}

void fk_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) { fsync(fd); close(fd); }
}

void fk_fsync_parent(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    while (n > 0 && path[n - 1] != '/') n--;
    char *parent = n == 0 ? strdup(".") : strndup(path, n);
    if (parent) fk_fsync_dir(parent);
    free(parent);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

fk_status fk_remove_tree(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return FK_OK;
    if (!S_ISDIR(sb.st_mode)) return remove(path) == 0 ? FK_OK : fk_error(FK_ERR_IO, "cannot remove %s: %s", path, strerror(errno));
    if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) return fk_error(FK_ERR_IO, "cannot remove %s: %s", path, strerror(errno));
    return FK_OK;
}

static void remove_tree_quietly(const char *path) { fk_remove_tree(path); }

fk_status fk_dir_replace(const char *tmp, const char *dir, const char *old, void (*remove_old)(const char *path)) {
    if (!remove_old) remove_old = remove_tree_quietly;
    fk_fsync_dir(tmp);
    struct stat sb;
    bool had = lstat(dir, &sb) == 0;
    remove_old(old);  // a stale one from a killed run
    if (had && rename(dir, old) != 0) return fk_error(FK_ERR_IO, "cannot move %s aside to replace it: %s", dir, strerror(errno));
    if (rename(tmp, dir) != 0) {
        fk_status st = fk_error(FK_ERR_IO, "cannot rename %s to %s: %s", tmp, dir, strerror(errno));
        if (had) rename(old, dir);  // the old folder back in place
        return st;
    }
    fk_fsync_parent(dir);
    if (had) remove_old(old);
    return FK_OK;
}

fk_status fk_afile_commit(fk_afile *f) {
    if (f->failed) { fk_afile_abort(f); return FK_ERR_IO; }
    if (fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0) {
        fk_status st = fk_error(FK_ERR_IO, "cannot flush %s: %s", f->tmp_path, strerror(errno));
        fk_afile_abort(f);
        return st;
    }
    fclose(f->fp);
    f->fp = NULL;
    if (rename(f->tmp_path, f->path) != 0) {
        fk_status st = fk_error(FK_ERR_IO, "cannot rename %s to %s: %s", f->tmp_path, f->path, strerror(errno));
        fk_afile_abort(f);
        return st;
    }
    fk_fsync_parent(f->path);
    afile_free(f);
    return FK_OK;
}

fk_status fk_write_file_atomic(const char *path, const void *data, size_t n) {
    fk_afile f;
    FK_TRY(fk_afile_open(&f, path));
    if (fk_afile_write(&f, data, n) != FK_OK) { fk_status st = FK_ERR_IO; fk_afile_abort(&f); return st; }
    return fk_afile_commit(&f);
}

fk_status fk_write_file_in(const char *dir, const char *name, const void *data, size_t n) {
    char *path = fk_path_join(dir, name);
    if (!path) return fk_error(FK_ERR_NOMEM, "out of memory");
    fk_status st = fk_write_file_atomic(path, data, n);
    free(path);
    return st;
}

fk_status fk_json_write_in(const char *dir, const char *name, cJSON *j) {
    char *text = j ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    fk_status st = text ? fk_write_file_in(dir, name, text, strlen(text)) : fk_error(FK_ERR_NOMEM, "out of memory");
    free(text);
    return st;
}

// Opens path for reading without blocking (a FIFO would wait for a writer) and refuses
// anything but a regular file (a FIFO, a directory, a device such as /dev/zero). Returns the
// descriptor (blocking again) and the size, or -1 with the error recorded.
static int open_regular(const char *path, size_t *size, fk_status *st) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) { *st = fk_error(FK_ERR_IO, "cannot open %s: %s", path, strerror(errno)); return -1; }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        *st = fk_error(FK_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(sb.st_mode)) {
        const char *kind = S_ISDIR(sb.st_mode) ? "a directory" : S_ISFIFO(sb.st_mode) ? "a FIFO (named pipe)"
                         : S_ISCHR(sb.st_mode) ? "a character device" : S_ISBLK(sb.st_mode) ? "a block device"
                         : S_ISSOCK(sb.st_mode) ? "a socket" : "not a regular file";
        *st = fk_error(FK_ERR_IO, "%s is %s, expected a regular file", path, kind);
        close(fd);
        return -1;
    }
    if (sb.st_size < 0 || (uint64_t)sb.st_size >= (uint64_t)SIZE_MAX / 2) {
        *st = fk_error(FK_ERR_IO, "%s: size %lld is out of range", path, (long long)sb.st_size);
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    *size = (size_t)sb.st_size;
    return fd;
}

fk_status fk_read_file(const char *path, char **data, size_t *n) {
    *data = NULL; if (n) *n = 0;
    fk_status st = FK_OK;
    size_t size = 0;
    int fd = open_regular(path, &size, &st);
    if (fd < 0) return st;
    char *buf = malloc(size + 1);
    if (!buf) { close(fd); return fk_error(FK_ERR_NOMEM, "out of memory reading %s (%zu bytes)", path, size); }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            st = r < 0 ? fk_error(FK_ERR_IO, "cannot read %s: %s", path, strerror(errno))
                       : fk_error(FK_ERR_IO, "cannot read %s: it shrank to %zu bytes while being read (%zu expected)", path, got, size);
            free(buf); close(fd);
            return st;
        }
        got += (size_t)r;
    }
    close(fd);
    buf[size] = 0;
    *data = buf; if (n) *n = size;
    return FK_OK;
}

fk_status fk_mmap_open(fk_mmap *m, const char *path) {
    m->data = NULL; m->size = 0;
    fk_status st = FK_OK;
    size_t size = 0;
    int fd = open_regular(path, &size, &st);
    if (fd < 0) return st;
    m->size = size;
    if (m->size > 0) {
        m->data = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m->data == MAP_FAILED) { m->data = NULL; m->size = 0; close(fd); return fk_error(FK_ERR_IO, "cannot mmap %s: %s", path, strerror(errno)); }
    }
    close(fd);
    return FK_OK;
}

_Static_assert(FK_JSON_MAX_DEPTH < CJSON_NESTING_LIMIT, "cJSON must not refuse first, with a poorer message");

fk_status fk_json_parse(const char *path, const char *text, size_t n, struct cJSON **out) {
    *out = NULL;
    // nesting first: cJSON stops at its own limit without saying why
    int depth = 0;
    bool in_str = false, esc = false;
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        if (in_str) {
            if (esc) esc = false;
            else if (c == '\\') esc = true;
            else if (c == '"') in_str = false;
        } else if (c == '"') in_str = true;
        else if (c == '[' || c == '{') {
            if (++depth > FK_JSON_MAX_DEPTH)
                return fk_error(FK_ERR_FORMAT, "%s: JSON nested deeper than %d levels (at byte %zu)", path, FK_JSON_MAX_DEPTH, i);
        } else if ((c == ']' || c == '}') && depth > 0) depth--;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, false);
    if (!root) {
        size_t at = end && end >= text && end <= text + n ? (size_t)(end - text) : 0, line = 1;
        for (size_t i = 0; i < at; i++) line += text[i] == '\n';
        return fk_error(FK_ERR_FORMAT, "%s: not valid JSON (parsing stops at byte %zu, line %zu)", path, at, line);
    }
    *out = root;
    return FK_OK;
}

fk_status fk_json_read(const char *path, struct cJSON **out) {
    *out = NULL;
    char *text;
    size_t n;
    FK_TRY(fk_read_file(path, &text, &n));
    fk_status st = fk_json_parse(path, text, n, out);
    free(text);
    return st;
}

void fk_mmap_close(fk_mmap *m) {
    if (m->data) munmap(m->data, m->size);
    m->data = NULL; m->size = 0;
}

bool fk_path_exists(const char *path) { struct stat sb; return stat(path, &sb) == 0; }

fk_status fk_mkdir_p(const char *path) {
    if (!*path) return fk_error(FK_ERR_ARG, "cannot create a directory with an empty name");  // (the loop starts past the first byte)
    char *p = strdup(path);
    if (!p) return fk_error(FK_ERR_NOMEM, "out of memory");
    for (char *s = p + 1; ; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s; *s = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                fk_status st = fk_error(FK_ERR_IO, "cannot create directory %s: %s", p, strerror(errno));
                free(p); return st;
            }
            *s = c;
            if (!c) break;
        }
    }
    free(p);
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return fk_error(FK_ERR_IO, "%s exists and is not a directory", path);
    return FK_OK;
}

char *fk_path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

double fk_time_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double fk_peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

// One of a CPU's topology numbers (/sys/devices/system/cpu/cpuN/topology/NAME), -1 when unreadable.
static long cpu_topology(int cpu, const char *name) {
    char path[128], buf[32];
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/%s", cpu, name);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long v = fgets(buf, sizeof buf, f) ? strtol(buf, NULL, 10) : -1;
    fclose(f);
    return v;
}

int fk_physical_cores(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        return n > 0 ? (int)n : 1;
    }
    enum { MAXC = CPU_SETSIZE };
    long seen[MAXC][2];  // (package, core) pairs met so far
    int n_cpu = 0, n_core = 0;
    bool topo = true;
    for (int c = 0; c < MAXC; c++) {
        if (!CPU_ISSET(c, &set)) continue;
        n_cpu++;
        long pkg = cpu_topology(c, "physical_package_id"), core = cpu_topology(c, "core_id");
        if (pkg < 0 || core < 0) { topo = false; continue; }
        bool dup = false;
        for (int k = 0; k < n_core && !dup; k++) dup = seen[k][0] == pkg && seen[k][1] == core;
        if (!dup) seen[n_core][0] = pkg, seen[n_core][1] = core, n_core++;
    }
    int n = topo && n_core > 0 ? n_core : n_cpu;
    return n > 0 ? n : 1;
}
