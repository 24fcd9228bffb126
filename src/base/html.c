// Self-contained HTML with inline SVG charts. See fusekit/html.h.
#include "fusekit/html.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fk_sb(fk_sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(b->buf ? b->buf + b->n : NULL, b->buf ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { b->oom = true; return; }
        if (b->buf && b->n + (size_t)k < b->cap) { b->n += (size_t)k; return; }
        size_t cap = (b->cap + (size_t)k + 1) * 2;
        char *p = realloc(b->buf, cap);
        if (!p) { b->oom = true; return; }
        b->buf = p;
        b->cap = cap;
    }
}

void fk_sb_text(fk_sbuf *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fk_sb(b, "&amp;"); break;
        case '<': fk_sb(b, "&lt;"); break;
        case '>': fk_sb(b, "&gt;"); break;
        case '\'': fk_sb(b, "&#39;"); break;
        case '"': fk_sb(b, "&quot;"); break;
        default: fk_sb(b, "%c", *s);
        }
    }
}

void fk_sb_free(fk_sbuf *b) {
    free(b->buf);
    memset(b, 0, sizeof *b);
}

fk_status fk_sb_write(fk_sbuf *b, const char *path) {
    fk_status st = b->oom ? fk_error(FK_ERR_NOMEM, "out of memory writing %s", path)
                          : fk_write_file_atomic(path, b->buf ? b->buf : "", b->n);
    fk_sb_free(b);
    return st;
}

fk_status fk_sb_write_in(fk_sbuf *b, const char *dir, const char *name) {
    char *p = fk_path_join(dir, name);
    if (!p) { fk_sb_free(b); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    fk_status st = fk_sb_write(b, p);
    free(p);
    return st;
}

const char *fk_svg_color(int i) {
    static const char *const pal[] = {"#4a78b0", "#d9823b", "#5a9e4b", "#b0493f", "#7c5fa8", "#8c6d4f", "#c96bb0", "#6f6f6f"};
    return pal[(i % 8 + 8) % 8];
}

// A value for a tick label: 3 significant digits.
static void tick(char *out, size_t cap, double v) { snprintf(out, cap, "%.3g", fabs(v) < 1e-12 ? 0.0 : v); }

// Round tick positions for [lo, hi]: a step of 1, 2 or 5 times a power of ten giving about 5
// intervals, the range widened to whole steps. Sets *t0 (first tick), *step and returns the count.
static int nice_ticks(double *lo, double *hi, double *t0, double *step) {
    double span = *hi - *lo;
    if (!(span > 0)) span = fabs(*hi) > 0 ? fabs(*hi) : 1;
    double raw = span / 5, p = pow(10, floor(log10(raw))), f = raw / p;
    *step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
    *lo = floor(*lo / *step + 1e-9) * *step;
    *hi = ceil(*hi / *step - 1e-9) * *step;
    if (*hi <= *lo) *hi = *lo + *step;
    *t0 = *lo;
    return (int)floor((*hi - *lo) / *step + 0.5) + 1;
}

// The y axis of a bar chart from 0 to vmax (rounded up to a tick): gridlines and labels at the
// round ticks, plot area y from top (vmax) to base (0), x from x0 to x1. Returns the rounded vmax.
static double bar_axis(fk_sbuf *b, double vmax, int x0, int x1, double top, double base) {
    double lo = 0, hi = vmax, t0, step;
    int n = nice_ticks(&lo, &hi, &t0, &step);
    for (int k = 0; k < n; k++) {
        double v = t0 + k * step, y = base - (base - top) * (v - lo) / (hi - lo);
        char t[32];
        tick(t, sizeof t, v);
        fk_sb(b, "<line x1='%d' y1='%.1f' x2='%d' y2='%.1f' stroke='%s'/><text x='%d' y='%.1f' font-size='9' text-anchor='end'>%s</text>", x0, y,
              x1, y, k == 0 ? "#999" : "#eee", x0 - 3, y + 3, t);
    }
    return hi;
}

void fk_svg_bars(fk_sbuf *b, const char *title, const double *v, int n, double vmax, const char *const *labels) {
    int bw = 18;
    for (int i = 0; labels && i < n; i++) {
        int lw = 7 * (int)strlen(labels[i]);
        if (lw > bw) bw = lw;
    }
    int step = bw + 8, w = 40 + step * n, h = 160;
    if (!(vmax > 0)) {
        vmax = 0;
        for (int i = 0; i < n; i++) if (isfinite(v[i])) vmax = fmax(vmax, v[i]);
        if (!(vmax > 0)) vmax = 1;
    }
    fk_sb(b, "<h3>%s</h3><svg width='%d' height='%d' xmlns='http://www.w3.org/2000/svg' font-family='sans-serif'>", title, w, h + 20);
    vmax = bar_axis(b, vmax, 28, w - 2, 20, h);
    for (int i = 0; i < n; i++) {
        double x = isfinite(v[i]) ? v[i] : 0, bh = (h - 20) * (x / vmax);
        if (bh < 0) bh = 0;
        fk_sb(b, "<rect x='%d' y='%.1f' width='%d' height='%.1f' fill='%s'><title>", 30 + step * i, h - bh, bw, bh, fk_svg_color(0));
        if (labels) fk_sb_text(b, labels[i]);
        else fk_sb(b, "layer %d", i);
        fk_sb(b, ": %.5g</title></rect>", x);
        if (labels) fk_sb(b, "<text x='%d' y='%.1f' font-size='9'>%.3g</text>", 32 + step * i, h - bh - 3, x);
        fk_sb(b, "<text x='%d' y='%d' font-size='10'>", 32 + step * i, h + 14);
        if (labels) fk_sb_text(b, labels[i]);
        else fk_sb(b, "%d", i);
        fk_sb(b, "</text>");
    }
    fk_sb(b, "</svg>");
}

void fk_svg_grouped_bars(fk_sbuf *b, const char *title, const char *const *groups, int n_groups, const char *const *series,
                         int n_series, const double *v, const char *fmt) {
    fk_svg_grouped_bars_ref(b, title, groups, n_groups, series, n_series, v, fmt, NULL, NULL);
}

void fk_svg_grouped_bars_ref(fk_sbuf *b, const char *title, const char *const *groups, int n_groups, const char *const *series,
                             int n_series, const double *v, const char *fmt, const double *ref, const char *ref_label) {
    int bw = 16, gap = 18, gw = n_series * bw + gap, h = 200, top = 56, w = 50 + gw * n_groups;
    double vmax = 0;
    for (int i = 0; i < n_groups * n_series; i++) if (isfinite(v[i])) vmax = fmax(vmax, v[i]);
    for (int g = 0; ref && g < n_groups; g++) if (isfinite(ref[g])) vmax = fmax(vmax, ref[g]);
    if (!(vmax > 0)) vmax = 1;
    int legend_w = 0;
    for (int s = 0; s < n_series; s++) legend_w += 36 + 7 * (int)strlen(series[s]);
    if (ref && ref_label) legend_w += 36 + 7 * (int)strlen(ref_label);
    if (legend_w + 50 > w) w = legend_w + 50;
    fk_sb(b, "<h3>%s</h3><svg width='%d' height='%d' xmlns='http://www.w3.org/2000/svg' font-family='sans-serif'>", title, w,
          top + h + 40);
    int lx = 40;
    for (int s = 0; s < n_series; s++) {
        fk_sb(b, "<rect x='%d' y='4' width='12' height='12' fill='%s'/><text x='%d' y='14' font-size='11'>", lx, fk_svg_color(s), lx + 16);
        fk_sb_text(b, series[s]);
        fk_sb(b, "</text>");
        lx += 36 + 7 * (int)strlen(series[s]);
    }
    if (ref && ref_label) {
        fk_sb(b, "<line x1='%d' y1='10' x2='%d' y2='10' stroke='#333' stroke-dasharray='4 3'/><text x='%d' y='14' font-size='11'>", lx, lx + 12,
              lx + 16);
        fk_sb_text(b, ref_label);
        fk_sb(b, "</text>");
    }
    vmax = bar_axis(b, vmax, 40, w - 5, top, top + h);
    for (int g = 0; g < n_groups; g++) {
        int gx = 45 + g * gw;
        for (int s = 0; s < n_series; s++) {
            double x = v[g * n_series + s];
            if (!isfinite(x)) continue;
            double bh = h * (x / vmax);
            if (bh < 0) bh = 0;
            fk_sb(b, "<rect x='%d' y='%.1f' width='%d' height='%.1f' fill='%s'><title>", gx + s * bw, top + h - bh, bw - 2, bh,
                  fk_svg_color(s));
            fk_sb_text(b, series[s]);
            fk_sb(b, ", ");
            fk_sb_text(b, groups[g]);
            char val[32];
            snprintf(val, sizeof val, fmt, x);
            fk_sb(b, ": %s</title></rect>", val);
            fk_sb(b, "<text x='%d' y='%.1f' font-size='8' transform='rotate(-90 %d %.1f)'>%s</text>", gx + s * bw + 10, top + h - bh - 3,
                  gx + s * bw + 10, top + h - bh - 3, val);
        }
        fk_sb(b, "<text x='%d' y='%d' font-size='11'>", gx, top + h + 16);
        fk_sb_text(b, groups[g]);
        fk_sb(b, "</text>");
        if (ref && isfinite(ref[g])) {
            double y = top + h - h * (ref[g] / vmax);
            fk_sb(b, "<line x1='%d' y1='%.1f' x2='%d' y2='%.1f' stroke='#333' stroke-dasharray='4 3'><title>", gx - 2, y, gx + n_series * bw, y);
            fk_sb_text(b, ref_label ? ref_label : "reference");
            fk_sb(b, ", ");
            fk_sb_text(b, groups[g]);
            char val[32];
            snprintf(val, sizeof val, fmt, ref[g]);
            fk_sb(b, ": %s</title></line>", val);
        }
    }
    fk_sb(b, "</svg>");
}

// white (lo) to dark blue (hi)
static void heat_color(double v, char *out) {
    if (!isfinite(v)) { snprintf(out, 16, "#dddddd"); return; }
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    int r = (int)(255 - 225 * v), g = (int)(255 - 180 * v), bl = (int)(255 - 90 * v);
    snprintf(out, 16, "#%02x%02x%02x", r, g, bl);
}

void fk_svg_heatmap(fk_sbuf *b, const char *title, const double *v, int rows, int cols, int cell, double lo, double hi,
                    const char *rl, int row0, const char *cl, int col0) {
    fk_sb(b, "<h3>%s</h3><svg width='%d' height='%d' xmlns='http://www.w3.org/2000/svg' font-family='sans-serif'>", title,
          40 + cols * cell, 30 + rows * cell);
    char c[16];
    double span = hi > lo ? hi - lo : 1;
    for (int i = 0; i < rows; i++) {
        if (cell >= 12) fk_sb(b, "<text x='4' y='%d' font-size='9'>%d</text>", 10 + i * cell + cell / 2 + 3, i + row0);
        for (int j = 0; j < cols; j++) {
            double x = v[(size_t)i * (size_t)cols + (size_t)j];
            heat_color((x - lo) / span, c);
            fk_sb(b, "<rect x='%d' y='%d' width='%d' height='%d' fill='%s'><title>%s %d, %s %d: %.4g</title></rect>", 30 + j * cell,
                  10 + i * cell, cell, cell, c, rl, i + row0, cl, j + col0, x);
        }
    }
    if (cell >= 12)
        for (int j = 0; j < cols; j++) fk_sb(b, "<text x='%d' y='%d' font-size='9'>%d</text>", 30 + j * cell + cell / 2 - 3, 22 + rows * cell, j + col0);
    fk_sb(b, "</svg>");
}

void fk_svg_lines(fk_sbuf *b, const char *title, const char *const *names, int n_series, const double *const *x,
                  const double *const *y, const int *n, const char *xlabel, const char *ylabel) {
    const int W = 560, H = 260, L = 55, R = 15, T = 30, B = 40;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int s = 0; s < n_series; s++)
        for (int i = 0; i < n[s]; i++)
            if (isfinite(x[s][i]) && isfinite(y[s][i])) {
                x0 = fmin(x0, x[s][i]); x1 = fmax(x1, x[s][i]);
                y0 = fmin(y0, y[s][i]); y1 = fmax(y1, y[s][i]);
            }
    if (!(x1 >= x0)) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
    if (x1 == x0) x1 = x0 + 1;
    if (y1 == y0) { y0 -= 0.5; y1 += 0.5; }
    double yt0, ystep, xt0, xstep;
    int ny = nice_ticks(&y0, &y1, &yt0, &ystep), nx = nice_ticks(&x0, &x1, &xt0, &xstep);
    fk_sb(b, "<h3>%s</h3><svg width='%d' height='%d' xmlns='http://www.w3.org/2000/svg' font-family='sans-serif'>", title, W, H);
    fk_sb(b, "<rect x='%d' y='%d' width='%d' height='%d' fill='none' stroke='#999'/>", L, T, W - L - R, H - T - B);
    for (int k = 0; k < ny; k++) {
        double yv = yt0 + k * ystep, py = H - B - (double)(H - T - B) * (yv - y0) / (y1 - y0);
        char ty[32];
        tick(ty, sizeof ty, yv);
        fk_sb(b, "<line x1='%d' y1='%.1f' x2='%d' y2='%.1f' stroke='#eee'/><text x='%d' y='%.1f' font-size='10' text-anchor='end'>%s</text>", L, py,
              W - R, py, L - 4, py + 3, ty);
    }
    for (int k = 0; k < nx; k++) {
        double xv = xt0 + k * xstep, px = L + (double)(W - L - R) * (xv - x0) / (x1 - x0);
        char tx[32];
        tick(tx, sizeof tx, xv);
        fk_sb(b, "<text x='%.1f' y='%d' font-size='10' text-anchor='middle'>%s</text>", px, H - B + 14, tx);
    }
    fk_sb(b, "<text x='%d' y='%d' font-size='11'>", W / 2 - 20, H - 6);
    fk_sb_text(b, xlabel);
    fk_sb(b, "</text><text x='4' y='%d' font-size='11'>", T - 8);
    fk_sb_text(b, ylabel);
    fk_sb(b, "</text>");
    int lx = L + 100;
    for (int s = 0; s < n_series; s++) {
        const char *col = fk_svg_color(s);
        fk_sb(b, "<polyline fill='none' stroke='%s' stroke-width='2' points='", col);
        for (int i = 0; i < n[s]; i++) {
            if (!isfinite(x[s][i]) || !isfinite(y[s][i])) continue;
            fk_sb(b, "%.1f,%.1f ", L + (W - L - R) * (x[s][i] - x0) / (x1 - x0), H - B - (H - T - B) * (y[s][i] - y0) / (y1 - y0));
        }
        fk_sb(b, "'/>");
        for (int i = 0; i < n[s]; i++) {
            if (!isfinite(x[s][i]) || !isfinite(y[s][i])) continue;
            fk_sb(b, "<circle cx='%.1f' cy='%.1f' r='2.5' fill='%s'><title>", L + (W - L - R) * (x[s][i] - x0) / (x1 - x0),
                  H - B - (H - T - B) * (y[s][i] - y0) / (y1 - y0), col);
            fk_sb_text(b, names[s]);
            fk_sb(b, " at %.6g: %.5g</title></circle>", x[s][i], y[s][i]);
        }
        fk_sb(b, "<rect x='%d' y='%d' width='12' height='4' fill='%s'/><text x='%d' y='%d' font-size='11'>", lx, T - 14, col, lx + 16, T - 9);
        fk_sb_text(b, names[s]);
        fk_sb(b, "</text>");
        lx += 30 + 7 * (int)strlen(names[s]);
    }
    fk_sb(b, "</svg>");
}

// The y range of a dot plot: every finite point, mean and interval end, padded by 8%.
static void dots_range(int n_cats, const double *const *pts, const int *n, const double *mean, const double *lo, const double *hi,
                       double *y0, double *y1) {
    *y0 = INFINITY;
    *y1 = -INFINITY;
    for (int c = 0; c < n_cats; c++) {
        double v[3] = {mean[c], lo ? lo[c] : NAN, hi ? hi[c] : NAN};
        for (int i = 0; i < 3 + n[c]; i++) {
            double y = i < 3 ? v[i] : pts[c][i - 3];
            if (isfinite(y)) { *y0 = fmin(*y0, y); *y1 = fmax(*y1, y); }
        }
    }
    if (!(*y1 >= *y0)) { *y0 = 0; *y1 = 1; }
    if (*y1 == *y0) { *y0 -= 0.5; *y1 += 0.5; }
    double pad = 0.08 * (*y1 - *y0);
    *y0 -= pad;
    *y1 += pad;
}

void fk_svg_dots(fk_sbuf *b, const char *title, const char *const *cats, int n_cats, const double *const *pts, const int *n,
                 const double *mean, const double *lo, const double *hi, const char *ylabel) {
    int cw = 30;
    for (int c = 0; c < n_cats; c++) {
        int w = 7 * (int)strlen(cats[c]) + 8;
        if (w > cw) cw = w;
    }
    const int L = 60, T = 30, H = 260, B = 36, W = L + 10 + cw * n_cats;
    double y0, y1;
    dots_range(n_cats, pts, n, mean, lo, hi, &y0, &y1);
    double yt0, ystep;
    int ny = nice_ticks(&y0, &y1, &yt0, &ystep);
#define DOTS_Y(v) (H - B - (H - T - B) * ((v) - y0) / (y1 - y0))
    fk_sb(b, "<h3>%s</h3><svg width='%d' height='%d' xmlns='http://www.w3.org/2000/svg' font-family='sans-serif'>", title, W, H);
    fk_sb(b, "<rect x='%d' y='%d' width='%d' height='%d' fill='none' stroke='#999'/>", L, T, W - L - 5, H - T - B);
    for (int k = 0; k < ny; k++) {
        double yv = yt0 + k * ystep;
        char t[32];
        tick(t, sizeof t, yv);
        fk_sb(b, "<line x1='%d' y1='%.1f' x2='%d' y2='%.1f' stroke='#eee'/><text x='%d' y='%.1f' font-size='10' text-anchor='end'>%s</text>", L,
              DOTS_Y(yv), W - 5, DOTS_Y(yv), L - 4, DOTS_Y(yv) + 3, t);
    }
    if (y0 < 0 && y1 > 0)
        fk_sb(b, "<line x1='%d' y1='%.1f' x2='%d' y2='%.1f' stroke='#555' stroke-dasharray='4 3'/>", L, DOTS_Y(0.0), W - 5, DOTS_Y(0.0));
    fk_sb(b, "<text x='4' y='%d' font-size='11'>", T - 10);
    fk_sb_text(b, ylabel);
    fk_sb(b, "</text>");
    for (int c = 0; c < n_cats; c++) {
        double cx = L + 5 + cw * (c + 0.5);
        const char *col = fk_svg_color(c);
        if (lo && hi && isfinite(lo[c]) && isfinite(hi[c])) {
            fk_sb(b, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#222' stroke-width='1.5'><title>", cx + 6, DOTS_Y(lo[c]),
                  cx + 6, DOTS_Y(hi[c]));
            fk_sb_text(b, cats[c]);
            fk_sb(b, ": interval %.5g to %.5g</title></line>", lo[c], hi[c]);
        }
        if (isfinite(mean[c])) {
            fk_sb(b, "<rect x='%.1f' y='%.1f' width='20' height='3' fill='#222'><title>", cx - 4, DOTS_Y(mean[c]) - 1.5);
            fk_sb_text(b, cats[c]);
            fk_sb(b, ": mean %.5g</title></rect>", mean[c]);
        }
        for (int i = 0; i < n[c]; i++) {
            if (!isfinite(pts[c][i])) continue;
            fk_sb(b, "<circle cx='%.1f' cy='%.1f' r='3.5' fill='%s' fill-opacity='0.75'><title>", cx - 6 + (i % 3) * 3.0,
                  DOTS_Y(pts[c][i]), col);
            fk_sb_text(b, cats[c]);
            fk_sb(b, " #%d: %.5g</title></circle>", i + 1, pts[c][i]);
        }
        fk_sb(b, "<text x='%.1f' y='%d' font-size='10' text-anchor='middle'>", cx, H - B + 14);
        fk_sb_text(b, cats[c]);
        fk_sb(b, "</text>");
    }
#undef DOTS_Y
    fk_sb(b, "</svg>");
}
