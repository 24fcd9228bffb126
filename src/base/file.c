// Files: atomic writes (temp + fsync + rename), whole-file reads, mmap, paths, timing.
#include "fusekit/base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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
    char *dir = strdup(f->path), *slash = dir ? strrchr(dir, '/') : NULL;
    if (dir) {
        if (slash) { *slash = 0; fk_fsync_dir(*dir ? dir : "/"); } else fk_fsync_dir(".");
        free(dir);
    }
    afile_free(f);
    return FK_OK;
}

fk_status fk_write_file_atomic(const char *path, const void *data, size_t n) {
    fk_afile f;
    FK_TRY(fk_afile_open(&f, path));
    if (fk_afile_write(&f, data, n) != FK_OK) { fk_status st = FK_ERR_IO; fk_afile_abort(&f); return st; }
    return fk_afile_commit(&f);
}

fk_status fk_read_file(const char *path, char **data, size_t *n) {
    *data = NULL; if (n) *n = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return fk_error(FK_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(fp);
        return fk_error(FK_ERR_IO, "%s is not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    char *buf = malloc(size + 1);
    if (!buf) { fclose(fp); return fk_error(FK_ERR_NOMEM, "out of memory reading %s (%zu bytes)", path, size); }
    if (fread(buf, 1, size, fp) != size) {
        free(buf); fclose(fp);
        return fk_error(FK_ERR_IO, "cannot read %s", path);
    }
    fclose(fp);
    buf[size] = 0;
    *data = buf; if (n) *n = size;
    return FK_OK;
}

fk_status fk_mmap_open(fk_mmap *m, const char *path) {
    m->data = NULL; m->size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return fk_error(FK_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) { close(fd); return fk_error(FK_ERR_IO, "%s is not a regular file", path); }
    m->size = (size_t)sb.st_size;
    if (m->size > 0) {
        m->data = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m->data == MAP_FAILED) { m->data = NULL; close(fd); return fk_error(FK_ERR_IO, "cannot mmap %s: %s", path, strerror(errno)); }
    }
    close(fd);
    return FK_OK;
}

void fk_mmap_close(fk_mmap *m) {
    if (m->data) munmap(m->data, m->size);
    m->data = NULL; m->size = 0;
}

bool fk_path_exists(const char *path) { struct stat sb; return stat(path, &sb) == 0; }

fk_status fk_mkdir_p(const char *path) {
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
