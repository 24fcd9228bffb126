// What the job files (job.c, job_fuse.c) share: reporting a line through the hooks.
#ifndef FK_JOB_INTERNAL_H
#define FK_JOB_INTERNAL_H

#include "fusekit/job.h"

// Formats a line and hands it to h->note (nothing when there is no hook).
void fk_job_note(const fk_job_hooks *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Whether dir holds a complete checkpoint (a run to resume). Sets fk_last_error when not.
bool fk_job_has_checkpoint(const char *dir);

#endif
