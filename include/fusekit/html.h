// Self-contained HTML reports: a growable string buffer and inline SVG charts (no scripts, no
// network; hovering a bar, point or cell shows its value through an SVG <title>). Used by
// analyze's analysis.html and the demo's report.html.
#ifndef FUSEKIT_HTML_H
#define FUSEKIT_HTML_H

#include "fusekit/base.h"

typedef struct {
    char *buf;
    size_t n, cap;
    bool oom;  // an allocation failed: later writes are ignored, fk_sb_write reports it
} fk_sbuf;

// Appends printf-formatted text.
void fk_sb(fk_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Appends text with &, <, >, ' and " escaped.
void fk_sb_text(fk_sbuf *b, const char *s);
// Writes the buffer to path atomically and frees it.
fk_status fk_sb_write(fk_sbuf *b, const char *path);
// fk_sb_write to dir/name (the buffer freed either way).
fk_status fk_sb_write_in(fk_sbuf *b, const char *dir, const char *name);
void fk_sb_free(fk_sbuf *b);

// The i-th colour of a fixed qualitative palette ("#rrggbb").
const char *fk_svg_color(int i);

// One bar per value, labelled by index (labels NULL) or by labels[i]. vmax <= 0: the largest value.
void fk_svg_bars(fk_sbuf *b, const char *title, const double *v, int n, double vmax, const char *const *labels);
// Groups of bars: v[g * n_series + s] for group g and series s, a legend of the series, the
// value printed above each bar with `fmt` (e.g. "%.3f"). Non-finite values are left out.
void fk_svg_grouped_bars(fk_sbuf *b, const char *title, const char *const *groups, int n_groups, const char *const *series,
                         int n_series, const double *v, const char *fmt);
// The same with a reference value per group (e.g. chance) drawn as a dashed line across the group,
// named ref_label in the legend and the line's tooltip; non-finite ref[g]: none for that group.
void fk_svg_grouped_bars_ref(fk_sbuf *b, const char *title, const char *const *groups, int n_groups, const char *const *series,
                             int n_series, const double *v, const char *fmt, const double *ref, const char *ref_label);
// Heatmap of v[rows * cols] scaled to [lo, hi] (white to dark blue; NaN grey). Row i is
// labelled rl + (i + row0), column j cl + (j + col0).
void fk_svg_heatmap(fk_sbuf *b, const char *title, const double *v, int rows, int cols, int cell, double lo, double hi,
                    const char *rl, int row0, const char *cl, int col0);
// Line chart: series s has n[s] points (x[s][i], y[s][i]); non-finite points are skipped.
void fk_svg_lines(fk_sbuf *b, const char *title, const char *const *names, int n_series, const double *const *x,
                  const double *const *y, const int *n, const char *xlabel, const char *ylabel);
// Dot plot: one column per category c, its points pts[c][0..n[c]) (e.g. one per seed) as
// dots, its mean[c] as a bar across the column and, when lo and hi are given (else NULL), a
// whisker from lo[c] to hi[c] (an interval); a dashed line at 0 when the range holds it.
// Non-finite values are left out. ylabel names the axis and its unit.
void fk_svg_dots(fk_sbuf *b, const char *title, const char *const *cats, int n_cats, const double *const *pts, const int *n,
                 const double *mean, const double *lo, const double *hi, const char *ylabel);

#endif
