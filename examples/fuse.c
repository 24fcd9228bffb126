// Knowledge fusion through the library, without the fusekit program: the same run as
//   fusekit fuse --target T --source A [B ...] --data TEXT -o OUT --steps 200 --lambda 0.9
// Build: cc -std=c11 fuse.c -Iinclude -Lbuild -lfusekit $(the libraries fusekit links) or, in
// this tree, the CMake target fk_example_fuse. Usage: fk_example_fuse T TEXT OUT A [B ...]
#include "fusekit/fusekit.h"
#include "fusekit/job.h"

#include <signal.h>
#include <stdio.h>

static volatile sig_atomic_t stop;  // set by Ctrl-C: the job saves a checkpoint and returns
static void on_signal(int sig) { stop = sig; }

// Lines for a person ("store ... (cached)", "resuming from ...", "saved ...").
static void on_note(const char *line, void *user) {
    (void)user;
    fprintf(stderr, "%s\n", line);
}

// One JSON line per logged step, as metrics.jsonl gets it.
static void on_step(const fk_train_event *ev, const char *json_line, void *user) {
    (void)ev;
    (void)user;
    if (json_line) printf("%s\n", json_line);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s TARGET TEXT OUT SOURCE [SOURCE ...]\n", argv[0]);
        return 2;
    }
    fk_fuse_job job;
    fk_fuse_job_defaults(&job);  // every default the fusekit program's --help shows
    job.target = argv[1];
    job.train.data = argv[2];
    job.train.out = argv[3];
    for (int i = 4; i < argc && job.sources.n < FK_PATH_LIST_MAX; i++) job.sources.v[job.sources.n++] = argv[i];
    job.train.o.steps = 200;
    job.train.lambda = 0.9f;
    job.train.given = FK_GIVEN_STEPS;  // a rerun after an interrupt resumes with these steps

    signal(SIGINT, on_signal);
    fk_job_hooks hooks = {.note = on_note, .step = on_step, .stop = &stop};
    fk_train_job_result r;
    fk_status st = fk_fuse_run(&job, &hooks, &r);
    if (r.stopped) {  // while extracting (st says what is kept), before training, or after a step
        fprintf(stderr, "stopped at step %lld%s%s; run again to resume\n", (long long)r.step, st != FK_OK ? ": " : "",
                st != FK_OK ? fk_last_error() : "");
        return 130;
    }
    if (st != FK_OK) {
        fprintf(stderr, "error: %s\n", fk_last_error());
        return r.refused ? 2 : 1;
    }
    return 0;
}
