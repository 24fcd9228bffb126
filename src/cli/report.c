// report.html for every run that writes a model (train, fuse, heal, fold, prune, merge): one
// self-contained page (inline SVG, no scripts, no network) with the command, the inputs and
// their SHA-256, the run's numbers, its training curves (metrics.jsonl) and, for fold and
// prune, the widths per layer before and after.
#include "cli.h"
#include "recipe.h"

#include "fusekit/html.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#ifndef FK_VERSION  // (the CLI's sources built into a test program)
#define FK_VERSION "unknown"
#endif

static char g_cmdline[4096];

void cli_set_command_line(int argc, char **argv) {
    size_t n = 0;
    g_cmdline[0] = 0;
    for (int i = 0; i < argc && n + 4 < sizeof g_cmdline; i++) {
        const char *a = argv[i];
        bool quote = !*a || strpbrk(a, " \t\"'$`\\|&;<>()*?") != NULL;
        int k = snprintf(g_cmdline + n, sizeof g_cmdline - n, "%s%s%s%s", i ? " " : "", quote ? "'" : "", a, quote ? "'" : "");
        if (k < 0 || (size_t)k >= sizeof g_cmdline - n) { g_cmdline[n] = 0; break; }
        n += (size_t)k;
    }
}

// An input's row: its path, what it is, its size and SHA-256 (a folder: of its files, as
// fusekit run's recipes record them; inputs over 4 GiB are not hashed, which the row says).
static void input_row(fk_sbuf *b, const char *path) {
    struct stat st;
    fk_sb(b, "<tr><td><code>");
    fk_sb_text(b, path);
    fk_sb(b, "</code></td>");
    if (stat(path, &st) != 0) { fk_sb(b, "<td colspan='3'>(not found)</td></tr>"); return; }
    bool dir = S_ISDIR(st.st_mode);
    int64_t bytes = dir ? 0 : (int64_t)st.st_size;
    if (dir) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char *p = fk_path_join(path, e->d_name);
            struct stat fs;
            if (p && stat(p, &fs) == 0 && S_ISREG(fs.st_mode)) bytes += (int64_t)fs.st_size;
            free(p);
        }
        if (d) closedir(d);
    }
    char hex[65] = "";
    bool hashed = bytes <= ((int64_t)4 << 30) && recipe_sha256(path, hex);
    fk_sb(b, "<td>%s</td><td>%.1f MB</td><td><code>%s</code></td></tr>", dir ? "folder" : "file", (double)bytes / 1e6,
          hashed ? hex : "(not hashed: over 4 GiB)");
}

static void summary_rows(fk_sbuf *b, const cJSON *j) {
    const cJSON *it;
    cJSON_ArrayForEach(it, j) {
        fk_sb(b, "<tr><td>");
        fk_sb_text(b, it->string);
        fk_sb(b, "</td><td>");
        if (cJSON_IsString(it)) fk_sb_text(b, it->valuestring);
        else if (cJSON_IsBool(it)) fk_sb(b, "%s", cJSON_IsTrue(it) ? "true" : "false");
        else if (cJSON_IsNumber(it)) fk_sb(b, "%.6g", it->valuedouble);  // 6 significant digits, not float noise
        else {
            char *s = cJSON_PrintUnformatted(it);
            if (s) fk_sb_text(b, s);
            free(s);
        }
        fk_sb(b, "</td></tr>");
    }
}

// Curves from OUT/metrics.jsonl: the training loss and its parts, the held-out bits per byte,
// the learning rate and throughput; a table of the first and last values.
typedef struct { double *v; int n, cap; } series;
static void push(series *s, double v) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 256;
        double *p = realloc(s->v, (size_t)cap * sizeof *p);
        if (!p) return;
        s->v = p, s->cap = cap;
    }
    s->v[s->n++] = v;
}

enum { S_STEP, S_LOSS, S_CLM, S_FUSION, S_VSTEP, S_VBPB, S_LR, S_TPS, S_N };

static void metrics_section(fk_sbuf *b, const char *dir) {
    char *path = fk_path_join(dir, "metrics.jsonl"), *text = NULL;
    size_t n = 0;
    if (!path || !fk_path_exists(path) || fk_read_file(path, &text, &n) != FK_OK) { free(path); return; }
    free(path);
    series s[S_N] = {{0}};
    cJSON *last = NULL;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        cJSON *j = cJSON_Parse(line);
        const cJSON *step = cJSON_GetObjectItem(j, "step");
        if (!cJSON_IsNumber(step)) { cJSON_Delete(j); continue; }
        const cJSON *f;
        push(&s[S_STEP], step->valuedouble);
        push(&s[S_LOSS], cJSON_IsNumber(f = cJSON_GetObjectItem(j, "loss")) ? f->valuedouble : NAN);
        push(&s[S_CLM], cJSON_IsNumber(f = cJSON_GetObjectItem(j, "clm_loss")) ? f->valuedouble : NAN);
        push(&s[S_FUSION], cJSON_IsNumber(f = cJSON_GetObjectItem(j, "fusion_loss")) ? f->valuedouble : NAN);
        push(&s[S_LR], cJSON_IsNumber(f = cJSON_GetObjectItem(j, "lr")) ? f->valuedouble : NAN);
        push(&s[S_TPS], cJSON_IsNumber(f = cJSON_GetObjectItem(j, "tokens_per_s")) ? f->valuedouble : NAN);
        if (cJSON_IsNumber(f = cJSON_GetObjectItem(j, "val_bpb"))) { push(&s[S_VSTEP], step->valuedouble); push(&s[S_VBPB], f->valuedouble); }
        cJSON_Delete(last);
        last = j;
    }
    free(text);
    int ns = s[S_STEP].n;
    if (ns > 0) {
        bool fusion = false;
        for (int i = 0; i < ns; i++) fusion |= isfinite(s[S_FUSION].v[i]);
        const double *xs[2] = {s[S_STEP].v, s[S_STEP].v};
        int nn[2] = {ns, ns};
        if (fusion) {
            // the objective's parts on their own chart: the total mixes them by lambda
            const char *names[2] = {"CLM loss (next token)", "fusion loss (against the teachers)"};
            const double *ys[2] = {s[S_CLM].v, s[S_FUSION].v};
            fk_svg_lines(b, "Training objectives per step", names, 2, xs, ys, nn, "step", "cross-entropy, nats");
            const char *tn[1] = {"lambda * CLM + (1 - lambda) * fusion"};
            const double *ty[1] = {s[S_LOSS].v};
            fk_svg_lines(b, "Training loss (the weighted sum that is minimised)", tn, 1, xs, ty, nn, "step", "nats");
        } else {
            const char *names[1] = {"training loss"};
            const double *ys[1] = {s[S_LOSS].v};
            fk_svg_lines(b, "Training loss per step", names, 1, xs, ys, nn, "step", "cross-entropy, nats");
        }
        if (s[S_VBPB].n > 0) {
            const char *names[1] = {"held-out bits per byte"};
            const double *vx[1] = {s[S_VSTEP].v}, *vy[1] = {s[S_VBPB].v};
            int vn[1] = {s[S_VBPB].n};
            fk_svg_lines(b, "Held-out bits per byte (lower is better)", names, 1, vx, vy, vn, "step", "bits per byte");
        }
        const char *ln[1] = {"learning rate"};
        const double *ly[1] = {s[S_LR].v};
        fk_svg_lines(b, "Learning-rate schedule", ln, 1, xs, ly, nn, "step", "learning rate");
        fk_sb(b, "<h3>Last logged step</h3><table>");
        summary_rows(b, last);
        fk_sb(b, "</table>");
    }
    cJSON_Delete(last);
    for (int i = 0; i < S_N; i++) free(s[i].v);
}

// The newest checkpoint's trainer_state.json options: the run's settings as the trainer saw them.
static void trainer_options(fk_sbuf *b, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    long best = -1;
    char name[300] = "";
    while ((e = readdir(d))) {
        long k;
        if (sscanf(e->d_name, "checkpoint-%ld", &k) == 1 && k > best) { best = k; snprintf(name, sizeof name, "%s", e->d_name); }
    }
    closedir(d);
    if (best < 0) return;
    char *ck = fk_path_join(dir, name), *p = ck ? fk_path_join(ck, "trainer_state.json") : NULL, *text = NULL;
    size_t n;
    if (p && fk_read_file(p, &text, &n) == FK_OK) {
        cJSON *j = cJSON_Parse(text);
        const cJSON *o = cJSON_GetObjectItem(j, "options");
        if (o) {
            fk_sb(b, "<h2>Training options</h2><p>From <code>");
            fk_sb_text(b, name);
            fk_sb(b, "/trainer_state.json</code>.</p><table>");
            summary_rows(b, o);
            fk_sb(b, "</table>");
        }
        cJSON_Delete(j);
    }
    free(text);
    free(p);
    free(ck);
}

// FFN widths and query heads per layer, before and after (fold, prune).
static void widths_section(fk_sbuf *b, const fk_model *before, const fk_model *after) {
    const fk_config *c0 = &before->cfg, *c1 = &after->cfg;
    int L = (int)c0->n_layer;
    if (L < 1 || L > FK_MAX_LAYERS) return;
    char (*lab)[16] = malloc((size_t)L * sizeof *lab);
    const char **lg = malloc((size_t)L * sizeof *lg);
    double *w = malloc((size_t)L * 2 * sizeof *w);
    if (lab && lg && w) {
        for (int l = 0; l < L; l++) {
            snprintf(lab[l], sizeof lab[l], "%d", l);
            lg[l] = lab[l];
            w[2 * l] = (double)c0->ffn[l];
            w[2 * l + 1] = l < c1->n_layer && c1->n_layer == c0->n_layer ? (double)c1->ffn[l] : NAN;  // a dropped layer: no width to pair
        }
        const char *ba[2] = {"before", "after"};
        fk_sb(b, "<h2>Widths per layer</h2><p>%lld layers before, %lld after%s.</p>", (long long)c0->n_layer, (long long)c1->n_layer,
              c1->n_layer != c0->n_layer ? " (layers were removed or merged: the after bars are left out)" : "");
        fk_svg_grouped_bars(b, "FFN width per layer (units), before and after", lg, L, ba, 2, w, "%.0f");
    }
    free(lab);
    free(lg);
    free(w);
}

fk_status cli_report_write(const char *dir, const char *verb, const char *const *inputs, int n_inputs, const cJSON *summary,
                           const fk_model *before, const fk_model *after) {
    return cli_report_write_ex(dir, verb, inputs, n_inputs, summary, before, after, NULL);
}

fk_status cli_report_write_ex(const char *dir, const char *verb, const char *const *inputs, int n_inputs, const cJSON *summary,
                              const fk_model *before, const fk_model *after, const char *extra_html) {
    fk_sbuf b = {0};
    time_t now = time(NULL);
    char when[64];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S %Z", localtime(&now));
    fk_sb(&b, "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'/><title>fusekit %s: ", verb);
    fk_sb_text(&b, dir);
    fk_sb(&b, "</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
              "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}"
              "code{font-size:12px}h3{margin:1.2em 0 .2em;font-size:15px}</style></head><body>\n");
    fk_sb(&b, "<h1>fusekit %s</h1><p>Output <code>", verb);
    fk_sb_text(&b, dir);
    fk_sb(&b, "</code>, written %s by fusekit %s.</p>", when, FK_VERSION);
    if (g_cmdline[0]) {
        fk_sb(&b, "<h2>Command</h2><pre>");
        fk_sb_text(&b, g_cmdline);
        fk_sb(&b, "</pre>");
    }
    fk_sb(&b, "<h2>Inputs</h2><table><tr><th>path</th><th>kind</th><th>size</th><th>SHA-256</th></tr>");
    for (int i = 0; i < n_inputs; i++)
        if (inputs[i]) input_row(&b, inputs[i]);
    fk_sb(&b, "</table>");
    if (summary) {
        fk_sb(&b, "<h2>Result</h2><table>");
        summary_rows(&b, summary);
        fk_sb(&b, "</table>");
    }
    if (before && after) widths_section(&b, before, after);
    if (extra_html) fk_sb(&b, "%s", extra_html);
    metrics_section(&b, dir);
    trainer_options(&b, dir);
    fk_sb(&b, "</body></html>\n");
    return fk_sb_write_in(&b, dir, "report.html");
}
