// Option rows back into a command line: what a verb's options struct holds, written as the
// fusekit command that parses into the same values (the demo's commands.sh).
#include "cli.h"

#include <stdlib.h>
#include <string.h>

void cli_render_word(FILE *f, const char *s) {
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputs("'\\''", f);  // close the quote, an escaped quote, reopen
        else fputc(*s, f);
    }
    fputc('\'', f);
}

// The shortest "%.*g" of x that strtod reads back as x (float: as the float x).
static void shortest(char *out, size_t n, double x, bool single) {
    for (int p = 1; p <= 17; p++) {
        snprintf(out, n, "%.*g", p, x);
        double y = strtod(out, NULL);
        if (single ? (float)y == (float)x : y == x) return;
    }
}

// A numeric or choice row's value as one word.
static void value_text(const cli_opt *o, char *out, size_t n) {
    out[0] = 0;
    switch (o->type) {
    case OPT_INT: snprintf(out, n, "%lld", (long long)*(const int64_t *)o->ptr); break;
    case OPT_I32: snprintf(out, n, "%d", *(const int *)o->ptr); break;
    case OPT_FLOAT: shortest(out, n, *(const double *)o->ptr, false); break;
    case OPT_F32: shortest(out, n, (double)*(const float *)o->ptr, true); break;
    case OPT_CHOICE: {
        const char *c = o->range;
        for (int k = *(const int *)o->ptr; k > 0 && c; k--) c = strchr(c, '|') ? strchr(c, '|') + 1 : NULL;
        if (c) snprintf(out, n, "%.*s", (int)strcspn(c, "|"), c);
        break;
    }
    default: break;  // a string, flag or list is written by the caller; a heading has no value
    }
}

void cli_row_value_text(const cli_opt *o, char *out, size_t n) { value_text(o, out, n); }

static bool str_equal(const char *a, const char *b) { return a == b || (a && b && strcmp(a, b) == 0); }

static bool lists_equal(const cli_list *a, const cli_list *b) {
    if (a->n != b->n) return false;
    for (int i = 0; i < a->n; i++)
        if (!str_equal(a->v[i], b->v[i])) return false;
    return true;
}

// Whether the row holds what d (the same row over a default-initialised struct) holds.
static bool at_default(const cli_opt *o, const cli_opt *d) {
    if (!d->name || strcmp(o->name, d->name) != 0 || o->type != d->type) return false;
    switch (o->type) {
    case OPT_STR: return str_equal(*(const char *const *)o->ptr, *(const char *const *)d->ptr);
    case OPT_INT: return *(const int64_t *)o->ptr == *(const int64_t *)d->ptr;
    case OPT_FLOAT: return *(const double *)o->ptr == *(const double *)d->ptr;
    case OPT_FLAG: return *(const bool *)o->ptr == *(const bool *)d->ptr;
    case OPT_LIST: return lists_equal(o->ptr, d->ptr);
    case OPT_I32:
    case OPT_CHOICE: return *(const int *)o->ptr == *(const int *)d->ptr;
    case OPT_F32: return *(const float *)o->ptr == *(const float *)d->ptr;
    default: return true;  // a heading (OPT_GROUP): no value
    }
}

// The name's first spelling ("-o" of "-o|--out"), or its last.
static void spelling(const cli_opt *o, bool last, char *out, size_t n) {
    const char *s = last && strrchr(o->name, '|') ? strrchr(o->name, '|') + 1 : o->name;
    snprintf(out, n, "%.*s", (int)strcspn(s, "|"), s);
}

// " 'name' 'value'". A value starting with '-' is written joined, '--name=value' (the long
// spelling), so that a list does not end at it.
static void render_pair(FILE *f, const cli_opt *o, const char *v) {
    char name[64];
    spelling(o, v[0] == '-', name, sizeof name);
    fputc(' ', f);
    if (v[0] == '-') {
        size_t n = strlen(name) + strlen(v) + 2;
        char *joined = malloc(n);
        if (joined) {
            snprintf(joined, n, "%s=%s", name, v);
            cli_render_word(f, joined);
            free(joined);
            return;
        }
    }
    cli_render_word(f, name);
    fputc(' ', f);
    cli_render_word(f, v);
}

void cli_render_rows(FILE *f, const cli_opt *rows, const cli_opt *defaults) {
    const cli_opt *d = defaults;
    for (const cli_opt *o = rows; o->name; o++) {
        bool same = d->name && at_default(o, d);
        if (d->name) d++;
        if (same) continue;
        if (o->type == OPT_FLAG) {  // a set flag is its name; a cleared one has no spelling
            char name[64];
            spelling(o, false, name, sizeof name);
            if (*(const bool *)o->ptr) { fputc(' ', f); cli_render_word(f, name); }
        } else if (o->type == OPT_LIST) {
            const cli_list *l = o->ptr;
            for (int i = 0; i < l->n; i++) render_pair(f, o, l->v[i]);
        } else if (o->type == OPT_STR) {
            const char *v = *(const char *const *)o->ptr;
            if (v) render_pair(f, o, v);  // an unset string has nothing to write
        } else {
            char v[64];
            value_text(o, v, sizeof v);
            render_pair(f, o, v);
        }
    }
}

void cli_render(FILE *f, const char *verb, const cli_opt *rows, const cli_opt *defaults) {
    fputs("fusekit", f);
    for (const char *w = verb; *w;) {  // each word of the verb ("data synth") quoted alone
        size_t n = strcspn(w, " ");
        char word[64];
        snprintf(word, sizeof word, "%.*s", (int)n, w);
        fputc(' ', f);
        cli_render_word(f, word);
        w += n;
        w += strspn(w, " ");
    }
    cli_render_rows(f, rows, defaults);
}

void cli_rows_mark_set(cli_opt *rows, const cli_opt *defaults) {
    const cli_opt *d = defaults;
    for (cli_opt *o = rows; o->name; o++) {
        o->set = !(d->name && at_default(o, d)) && o->type != OPT_GROUP;
        if (d->name) d++;
    }
}
