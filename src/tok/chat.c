// Chat templates: a Jinja-subset interpreter (lexer, parser to a tree, evaluator over values in
// an arena) and the lookup of a model's template. What the subset holds is in chat.h.
#include "fusekit/chat.h"
#include "fusekit/gguf.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

// ------------------------------------------------------------------ arena

typedef struct blk {
    struct blk *next;
    size_t used, cap;
    max_align_t data[];
} blk;

typedef struct {
    blk *head;
    bool failed;
} arena;

static void *aalloc(arena *a, size_t n) {
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (!a->head || a->head->used + n > a->head->cap) {
        size_t cap = n > 65536 ? n : 65536;
        blk *b = malloc(sizeof(blk) + cap);
        if (!b) { a->failed = true; return NULL; }
        b->next = a->head, b->used = 0, b->cap = cap;
        a->head = b;
    }
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += n;
    return p;
}

static void arena_free(arena *a) {
    for (blk *b = a->head, *n; b; b = n) { n = b->next; free(b); }
    a->head = NULL;
}

// ------------------------------------------------------------------ values

typedef enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_FUNC } vkind;

typedef struct val val;
typedef struct { const char *s; size_t n; } str;
typedef struct { val *v; int n, cap; } vlist;
typedef struct { str *k; val *v; int n, cap; bool ns; } vdict;  // ns: a namespace() (attributes may be set)

struct val {
    vkind k;
    union {
        bool b;
        int64_t i;
        double f;
        str s;
        vlist *l;
        vdict *d;
        struct { int id; const val *self; const char *name; const void *macro; } fn;  // a global (self NULL), a bound method, a macro
    } u;
};

static const val UNDEF = {V_UNDEF, {0}};
static const val NONE = {V_NONE, {0}};

static val vbool(bool b) { val v = {V_BOOL, {.b = b}}; return v; }
static val vint(int64_t i) { val v = {V_INT, {.i = i}}; return v; }
static val vfloat(double f) { val v = {V_FLOAT, {.f = f}}; return v; }
static val vstr(const char *s, size_t n) { val v = {V_STR, {.s = {s, n}}}; return v; }

// A key as a value: an integer key (int_key) back as the integer.
static val key_val(str k) {
    if (k.n > 1 && k.s[0] == '\x01') return vint(strtoll(k.s + 1, NULL, 10));
    return vstr(k.s, k.n);
}

// ------------------------------------------------------------------ lexer

typedef enum { T_TEXT, T_VB, T_VE, T_BB, T_BE, T_NAME, T_STR, T_INT, T_FLOAT, T_OP, T_EOF } tkind;

typedef struct {
    tkind k;
    int line;
    str s;          // text, name, op, or the (unescaped) string
    int64_t i;
    double f;
} token;

typedef struct {
    arena *a;
    const char *src;
    size_t n;
    token *t;
    int nt, cap;
    fk_status st;
} lexer;

static bool lex_push(lexer *L, token t) {
    if (L->nt == L->cap) {
        int cap = L->cap ? 2 * L->cap : 256;
        token *p = realloc(L->t, (size_t)cap * sizeof *p);
        if (!p) { L->st = fk_error(FK_ERR_NOMEM, "out of memory reading a chat template"); return false; }
        L->t = p, L->cap = cap;
    }
    L->t[L->nt++] = t;
    return true;
}

static int line_at(const lexer *L, size_t pos) {
    int line = 1;
    for (size_t i = 0; i < pos && i < L->n; i++) line += L->src[i] == '\n';
    return line;
}

// A quoted string at src[*pos] (Python escapes \n \t \r \\ \' \" \uXXXX), unescaped into the arena.
static bool lex_string(lexer *L, size_t *pos, token *t) {
    char q = L->src[*pos];
    size_t i = *pos + 1;
    char *out = aalloc(L->a, L->n - *pos + 1);
    if (!out) { L->st = fk_error(FK_ERR_NOMEM, "out of memory"); return false; }
    size_t o = 0;
    for (; i < L->n && L->src[i] != q; i++) {
        char c = L->src[i];
        if (c == '\\' && i + 1 < L->n) {
            char e = L->src[++i];
            switch (e) {
            case 'n': out[o++] = '\n'; break;
            case 't': out[o++] = '\t'; break;
            case 'r': out[o++] = '\r'; break;
            case '0': out[o++] = '\0'; break;
            case 'u': {
                unsigned cp = 0;
                int k = 0;
                for (; k < 4 && i + 1 < L->n && isxdigit((unsigned char)L->src[i + 1]); k++) {
                    char h = L->src[++i];
                    cp = cp * 16 + (unsigned)(h <= '9' ? h - '0' : (h | 32) - 'a' + 10);
                }
                if (k < 4) { L->st = fk_error(FK_ERR_FORMAT, "chat template line %d: bad \\u escape", line_at(L, i)); return false; }
                if (cp < 0x80) out[o++] = (char)cp;
                else if (cp < 0x800) { out[o++] = (char)(0xC0 | cp >> 6); out[o++] = (char)(0x80 | (cp & 63)); }
                else { out[o++] = (char)(0xE0 | cp >> 12); out[o++] = (char)(0x80 | ((cp >> 6) & 63)); out[o++] = (char)(0x80 | (cp & 63)); }
                break;
            }
            case '\\': case '\'': case '"': out[o++] = e; break;
            default: out[o++] = '\\'; out[o++] = e;  // Python keeps unknown escapes
            }
        } else out[o++] = c;
    }
    if (i >= L->n) { L->st = fk_error(FK_ERR_FORMAT, "chat template line %d: unterminated string", line_at(L, *pos)); return false; }
    out[o] = 0;
    t->k = T_STR;
    t->s = (str){out, o};
    *pos = i + 1;
    return true;
}

static const char *const OPS2[] = {"==", "!=", "<=", ">=", "//", "**", NULL};

// The tokens of one tag from *pos up to its closing "}}" / "%}" (end: "}}" or "%}"); sets
// *strip_after when the tag ends with '-'.
static bool lex_tag(lexer *L, size_t *pos, const char *end, bool *strip_after) {
    size_t i = *pos;
    for (;;) {
        while (i < L->n && isspace((unsigned char)L->src[i])) i++;
        if (i >= L->n) { L->st = fk_error(FK_ERR_FORMAT, "chat template line %d: a tag is not closed (\"%s\" expected)", line_at(L, *pos), end); return false; }
        const char *p = L->src + i;
        if (p[0] == '-' && i + 2 < L->n && p[1] == end[0] && p[2] == end[1]) { *strip_after = true; *pos = i + 3; return true; }
        if (p[0] == '+' && i + 2 < L->n && p[1] == end[0] && p[2] == end[1]) { *strip_after = false; *pos = i + 3; return true; }
        if (i + 1 < L->n && p[0] == end[0] && p[1] == end[1]) { *strip_after = false; *pos = i + 2; return true; }
        token t = {.line = line_at(L, i)};
        if (*p == '\'' || *p == '"') {
            if (!lex_string(L, &i, &t)) return false;
        } else if (isdigit((unsigned char)*p)) {
            size_t j = i;
            while (j < L->n && (isdigit((unsigned char)L->src[j]) || L->src[j] == '_')) j++;
            if (j + 1 < L->n && L->src[j] == '.' && isdigit((unsigned char)L->src[j + 1])) {
                char *e;
                t.k = T_FLOAT;
                t.f = strtod(p, &e);
                j = (size_t)(e - L->src);
            } else {
                t.k = T_INT;
                t.i = 0;
                for (size_t q = i; q < j; q++)
                    if (L->src[q] != '_') {
                        if (t.i > (INT64_MAX - 9) / 10) { L->st = fk_error(FK_ERR_FORMAT, "chat template line %d: integer too large", t.line); return false; }
                        t.i = t.i * 10 + (L->src[q] - '0');
                    }
            }
            i = j;
        } else if (isalpha((unsigned char)*p) || *p == '_') {
            size_t j = i;
            while (j < L->n && (isalnum((unsigned char)L->src[j]) || L->src[j] == '_')) j++;
            t.k = T_NAME;
            t.s = (str){p, j - i};
            i = j;
        } else {
            t.k = T_OP;
            size_t k = 1;
            for (int o = 0; OPS2[o]; o++)
                if (i + 1 < L->n && p[0] == OPS2[o][0] && p[1] == OPS2[o][1]) k = 2;
            if (!strchr("+-*/%~<>=!()[]{}.,:|", *p)) {
                L->st = fk_error(FK_ERR_FORMAT, "chat template line %d: unexpected character '%c'", t.line, *p);
                return false;
            }
            t.s = (str){p, k};
            i += k;
        }
        if (!lex_push(L, t)) return false;
    }
}

// Whitespace control: '-' strips all whitespace on that side; lstrip_blocks strips spaces and
// tabs between a line's start and a block or comment tag; trim_blocks drops the newline right
// after one (transformers renders with both).
static bool lex(lexer *L) {
    size_t pos = 0;
    bool strip_next = false;
    while (pos < L->n) {
        size_t tag = pos;
        const char *open = NULL;
        for (; tag + 1 < L->n; tag++)
            if (L->src[tag] == '{' && (L->src[tag + 1] == '{' || L->src[tag + 1] == '%' || L->src[tag + 1] == '#')) { open = L->src + tag; break; }
        if (!open) tag = L->n;
        size_t b = pos, e = tag;
        if (strip_next) while (b < e && isspace((unsigned char)L->src[b])) b++;
        strip_next = false;
        if (open) {
            char kind = open[1];
            bool minus = tag + 2 < L->n && open[2] == '-', plus = tag + 2 < L->n && open[2] == '+';
            if (minus) while (e > b && isspace((unsigned char)L->src[e - 1])) e--;
            else if (!plus && kind != '{') {  // lstrip_blocks
                size_t k = e;
                while (k > b && (L->src[k - 1] == ' ' || L->src[k - 1] == '\t')) k--;
                if (k == 0 || L->src[k - 1] == '\n') e = k;
            }
        }
        if (e > b && !lex_push(L, (token){T_TEXT, line_at(L, b), {L->src + b, e - b}, 0, 0})) return false;
        if (!open) break;
        char kind = open[1];
        size_t p = tag + 2 + ((tag + 2 < L->n && (open[2] == '-' || open[2] == '+')) ? 1 : 0);
        bool strip_after = false;
        if (kind == '#') {
            const char *c = NULL;
            for (size_t k = p; k + 1 < L->n; k++)
                if (L->src[k] == '#' && L->src[k + 1] == '}') { c = L->src + k; break; }
            if (!c) return (L->st = fk_error(FK_ERR_FORMAT, "chat template line %d: a comment is not closed", line_at(L, tag))), false;
            size_t cend = (size_t)(c - L->src);
            strip_after = cend > p && L->src[cend - 1] == '-';
            pos = cend + 2;
        } else {
            if (!lex_push(L, (token){kind == '{' ? T_VB : T_BB, line_at(L, tag), {0}, 0, 0})) return false;
            if (!lex_tag(L, &p, kind == '{' ? "}}" : "%}", &strip_after)) return false;
            if (!lex_push(L, (token){kind == '{' ? T_VE : T_BE, line_at(L, p), {0}, 0, 0})) return false;
            pos = p;
        }
        if (strip_after) strip_next = true;
        else if (kind != '{' && pos < L->n && L->src[pos] == '\n') pos++;  // trim_blocks
    }
    return lex_push(L, (token){T_EOF, line_at(L, L->n), {0}, 0, 0});
}

// ------------------------------------------------------------------ tree

typedef enum {
    N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_BREAK, N_CONTINUE, N_MACRO,  // statements
    N_LIT, N_NAME, N_ATTR, N_ITEM, N_SLICE, N_CALL, N_FILTER, N_TEST, N_NOT, N_NEG, N_BIN, N_AND, N_OR, N_COND,
    N_LIST, N_DICT,
} nkind;

typedef struct node node;
typedef struct { node **v; int n; } nlist;

struct node {
    nkind k;
    int line;
    val lit;              // N_LIT
    str name;             // N_NAME, N_ATTR, N_FILTER, N_TEST, N_SET target, N_BIN op, N_FOR vars
    str name2;            // N_FOR second variable, N_SET attribute
    node *a, *b, *c;      // operands; N_FOR iter (a), filter (b); N_SET value (a)
    nlist args;           // call / filter / test arguments; N_LIST / N_DICT items (dict: key, value pairs)
    str *kw;              // keyword names for args (NULL entries: positional); N_MACRO: parameter names (args: defaults)
    bool neg;             // N_TEST: "is not"
    nlist body, orelse;   // N_IF: bodies (one per condition in args) and else; N_FOR, N_MACRO: body (and else)
    nlist *bodies;        // N_IF: one body per condition
};

typedef struct {
    arena *a;
    token *t;
    int i, depth;
    fk_status st;
} parser;

#define P_FAIL(P, ...) ((P)->st = fk_error(__VA_ARGS__), (node *)NULL)

static bool is_op(const token *t, const char *op) { return t->k == T_OP && t->s.n == strlen(op) && memcmp(t->s.s, op, t->s.n) == 0; }
static bool is_name(const token *t, const char *nm) { return t->k == T_NAME && t->s.n == strlen(nm) && memcmp(t->s.s, nm, t->s.n) == 0; }
static bool str_is(str s, const char *z) { return s.n == strlen(z) && memcmp(s.s, z, s.n) == 0; }

static node *mk(parser *P, nkind k, int line) {
    node *n = aalloc(P->a, sizeof *n);
    if (!n) { P->st = fk_error(FK_ERR_NOMEM, "out of memory parsing a chat template"); return NULL; }
    memset(n, 0, sizeof *n);
    n->k = k, n->line = line;
    return n;
}

static bool nl_push(parser *P, nlist *l, node *x, int *cap) {
    if (l->n == *cap) {
        int c = *cap ? 2 * *cap : 4;
        node **v = aalloc(P->a, (size_t)c * sizeof *v);
        if (!v) { P->st = fk_error(FK_ERR_NOMEM, "out of memory"); return false; }
        if (l->n) memcpy(v, l->v, (size_t)l->n * sizeof *v);
        l->v = v, *cap = c;
    }
    l->v[l->n++] = x;
    return true;
}

static node *expr(parser *P);

static const char *tok_desc(const token *t, char *buf, size_t n) {
    switch (t->k) {
    case T_EOF: return "the end of the template";
    case T_VE: return "'}}'";
    case T_BE: return "'%}'";
    case T_TEXT: return "text";
    default: snprintf(buf, n, "'%.*s'", (int)(t->s.n > 40 ? 40 : t->s.n), t->s.s ? t->s.s : ""); return buf;
    }
}

static bool expect_op(parser *P, const char *op) {
    if (is_op(&P->t[P->i], op)) { P->i++; return true; }
    char b[64];
    P->st = fk_error(FK_ERR_FORMAT, "chat template line %d: '%s' expected, found %s", P->t[P->i].line, op, tok_desc(&P->t[P->i], b, sizeof b));
    return false;
}

// Call arguments after '(' up to ')': positional and name=value.
static bool call_args(parser *P, node *n) {
    int cap = 0;
    str kws[64];
    while (!is_op(&P->t[P->i], ")")) {
        if (n->args.n >= 64) { P->st = fk_error(FK_ERR_UNSUPPORTED, "chat template line %d: more than 64 arguments", P->t[P->i].line); return false; }
        str kw = {0};
        if (P->t[P->i].k == T_NAME && is_op(&P->t[P->i + 1], "=")) { kw = P->t[P->i].s; P->i += 2; }
        node *a = expr(P);
        if (!a || !nl_push(P, &n->args, a, &cap)) return false;
        kws[n->args.n - 1] = kw;
        if (!is_op(&P->t[P->i], ")") && !expect_op(P, ",")) return false;
    }
    P->i++;
    if (n->args.n) {
        n->kw = aalloc(P->a, (size_t)n->args.n * sizeof(str));
        if (!n->kw) { P->st = fk_error(FK_ERR_NOMEM, "out of memory"); return false; }
        memcpy(n->kw, kws, (size_t)n->args.n * sizeof(str));
    }
    return true;
}

static node *primary(parser *P) {
    token *t = &P->t[P->i];
    node *n;
    if (t->k == T_STR) {
        // adjacent literals join, as in Python
        size_t len = 0;
        int j = P->i;
        for (; P->t[j].k == T_STR; j++) len += P->t[j].s.n;
        char *s = aalloc(P->a, len + 1);
        if (!s) return P_FAIL(P, FK_ERR_NOMEM, "out of memory");
        len = 0;
        for (; P->i < j; P->i++) { memcpy(s + len, P->t[P->i].s.s, P->t[P->i].s.n); len += P->t[P->i].s.n; }
        s[len] = 0;
        if (!(n = mk(P, N_LIT, t->line))) return NULL;
        n->lit = vstr(s, len);
        return n;
    }
    if (t->k == T_INT || t->k == T_FLOAT) {
        P->i++;
        if (!(n = mk(P, N_LIT, t->line))) return NULL;
        n->lit = t->k == T_INT ? vint(t->i) : vfloat(t->f);
        return n;
    }
    if (t->k == T_NAME) {
        P->i++;
        if (!(n = mk(P, N_LIT, t->line))) return NULL;
        if (str_is(t->s, "true") || str_is(t->s, "True")) n->lit = vbool(true);
        else if (str_is(t->s, "false") || str_is(t->s, "False")) n->lit = vbool(false);
        else if (str_is(t->s, "none") || str_is(t->s, "None")) n->lit = NONE;
        else { n->k = N_NAME; n->name = t->s; }
        return n;
    }
    if (is_op(t, "(")) {
        P->i++;
        if (is_op(&P->t[P->i], ")")) { P->i++; return mk(P, N_LIST, t->line); }  // (): an empty tuple, held as a list
        node *e = expr(P);
        if (!e) return NULL;
        if (is_op(&P->t[P->i], ",")) {  // a tuple, held as a list
            if (!(n = mk(P, N_LIST, t->line))) return NULL;
            int cap = 0;
            if (!nl_push(P, &n->args, e, &cap)) return NULL;
            while (is_op(&P->t[P->i], ",")) {
                P->i++;
                if (is_op(&P->t[P->i], ")")) break;
                if (!(e = expr(P)) || !nl_push(P, &n->args, e, &cap)) return NULL;
            }
            e = n;
        }
        return expect_op(P, ")") ? e : NULL;
    }
    if (is_op(t, "[") || is_op(t, "{")) {
        bool dict = is_op(t, "{");
        P->i++;
        if (!(n = mk(P, dict ? N_DICT : N_LIST, t->line))) return NULL;
        int cap = 0;
        while (!is_op(&P->t[P->i], dict ? "}" : "]")) {
            node *e = expr(P);
            if (!e || !nl_push(P, &n->args, e, &cap)) return NULL;
            if (dict) {
                if (!expect_op(P, ":")) return NULL;
                if (!(e = expr(P)) || !nl_push(P, &n->args, e, &cap)) return NULL;
            }
            if (!is_op(&P->t[P->i], dict ? "}" : "]") && !expect_op(P, ",")) return NULL;
        }
        P->i++;
        return n;
    }
    char b[64];
    return P_FAIL(P, FK_ERR_FORMAT, "chat template line %d: an expression expected, found %s", t->line, tok_desc(t, b, sizeof b));
}

static node *postfix(parser *P, node *n) {
    while (n) {
        token *t = &P->t[P->i];
        if (is_op(t, ".")) {
            if (P->t[P->i + 1].k != T_NAME) return P_FAIL(P, FK_ERR_FORMAT, "chat template line %d: a name expected after '.'", t->line);
            node *a = mk(P, N_ATTR, t->line);
            if (!a) return NULL;
            a->a = n, a->name = P->t[P->i + 1].s;
            P->i += 2;
            n = a;
        } else if (is_op(t, "[")) {
            P->i++;
            node *lo = NULL, *hi = NULL, *step = NULL;
            bool slice = false;
            if (!is_op(&P->t[P->i], ":") && !(lo = expr(P))) return NULL;
            if (is_op(&P->t[P->i], ":")) {
                slice = true;
                P->i++;
                if (!is_op(&P->t[P->i], "]") && !is_op(&P->t[P->i], ":") && !(hi = expr(P))) return NULL;
                if (is_op(&P->t[P->i], ":")) {
                    P->i++;
                    if (!is_op(&P->t[P->i], "]") && !(step = expr(P))) return NULL;
                }
            }
            if (!expect_op(P, "]")) return NULL;
            node *s = mk(P, slice ? N_SLICE : N_ITEM, t->line);
            if (!s) return NULL;
            s->a = n;
            if (slice) { s->b = lo; s->c = hi; if (step) { int cap = 0; if (!nl_push(P, &s->args, step, &cap)) return NULL; } }
            else s->b = lo;
            n = s;
        } else if (is_op(t, "(")) {
            P->i++;
            node *c = mk(P, N_CALL, t->line);
            if (!c) return NULL;
            c->a = n;
            if (!call_args(P, c)) return NULL;
            n = c;
        } else break;
    }
    return n;
}

// Filters (x | f(args)) and tests (x is [not] t(args)), which bind tighter than arithmetic.
static node *filters(parser *P, node *n) {
    while (n) {
        token *t = &P->t[P->i];
        if (is_op(t, "|")) {
            if (P->t[P->i + 1].k != T_NAME) return P_FAIL(P, FK_ERR_FORMAT, "chat template line %d: a filter name expected after '|'", t->line);
            node *f = mk(P, N_FILTER, t->line);
            if (!f) return NULL;
            f->a = n, f->name = P->t[P->i + 1].s;
            P->i += 2;
            if (is_op(&P->t[P->i], "(")) { P->i++; if (!call_args(P, f)) return NULL; }
            n = f;
        } else if (is_name(t, "is")) {
            P->i++;
            node *f = mk(P, N_TEST, t->line);
            if (!f) return NULL;
            if (is_name(&P->t[P->i], "not")) { f->neg = true; P->i++; }
            token *nm = &P->t[P->i];
            if (nm->k != T_NAME) return P_FAIL(P, FK_ERR_FORMAT, "chat template line %d: a test name expected after 'is'", t->line);
            f->a = n, f->name = nm->s;
            P->i++;
            if (is_op(&P->t[P->i], "(")) { P->i++; if (!call_args(P, f)) return NULL; }
            else if (P->t[P->i].k == T_STR || P->t[P->i].k == T_INT || (P->t[P->i].k == T_NAME && !is_name(&P->t[P->i], "and") &&
                     !is_name(&P->t[P->i], "or") && !is_name(&P->t[P->i], "else") && !is_name(&P->t[P->i], "if"))) {
                int cap = 0;  // one argument without parentheses: "x is divisibleby 3", "x is sameas none"
                node *a = postfix(P, primary(P));
                if (!a || !nl_push(P, &f->args, a, &cap)) return NULL;
            }
            n = f;
        } else break;
    }
    return n;
}

static node *unary(parser *P) {
    token *t = &P->t[P->i];
    if (is_op(t, "-") || is_op(t, "+")) {
        P->i++;
        node *x = unary(P);
        if (!x || is_op(t, "+")) return x;
        node *n = mk(P, N_NEG, t->line);
        if (n) n->a = x;
        return n;
    }
    return filters(P, postfix(P, primary(P)));
}

static node *bin(parser *P, node *l, token *t, node *r) {
    if (!l || !r) return NULL;
    node *n = mk(P, N_BIN, t->line);
    if (!n) return NULL;
    n->name = t->s, n->a = l, n->b = r;
    return n;
}

static node *math2(parser *P) {
    node *l = unary(P);
    while (l && (is_op(&P->t[P->i], "*") || is_op(&P->t[P->i], "/") || is_op(&P->t[P->i], "//") || is_op(&P->t[P->i], "%"))) {
        token *t = &P->t[P->i++];
        l = bin(P, l, t, unary(P));
    }
    return l;
}

static node *concat(parser *P) {
    node *l = math2(P);
    while (l && is_op(&P->t[P->i], "~")) {
        token *t = &P->t[P->i++];
        l = bin(P, l, t, math2(P));
    }
    return l;
}

static node *math1(parser *P) {
    node *l = concat(P);
    while (l && (is_op(&P->t[P->i], "+") || is_op(&P->t[P->i], "-"))) {
        token *t = &P->t[P->i++];
        l = bin(P, l, t, concat(P));
    }
    return l;
}

static node *compare(parser *P) {
    node *l = math1(P);
    for (;;) {
        token *t = &P->t[P->i];
        if (!l) return NULL;
        if (is_op(t, "==") || is_op(t, "!=") || is_op(t, "<") || is_op(t, ">") || is_op(t, "<=") || is_op(t, ">=") || is_name(t, "in")) {
            P->i++;
            node *r = math1(P);
            l = bin(P, l, t, r);
        } else if (is_name(t, "not") && is_name(&P->t[P->i + 1], "in")) {
            token *op = &P->t[P->i + 1];
            P->i += 2;
            node *r = math1(P), *in = bin(P, l, op, r);
            if (!in) return NULL;
            node *n = mk(P, N_NOT, t->line);
            if (!n) return NULL;
            n->a = in;
            l = n;
        } else return l;
    }
}

static node *not_expr(parser *P) {
    token *t = &P->t[P->i];
    if (is_name(t, "not")) {
        P->i++;
        node *x = not_expr(P);
        if (!x) return NULL;
        node *n = mk(P, N_NOT, t->line);
        if (n) n->a = x;
        return n;
    }
    return compare(P);
}

static node *and_expr(parser *P) {
    node *l = not_expr(P);
    while (l && is_name(&P->t[P->i], "and")) {
        token *t = &P->t[P->i++];
        node *r = not_expr(P), *n = r ? mk(P, N_AND, t->line) : NULL;
        if (!n) return NULL;
        n->a = l, n->b = r;
        l = n;
    }
    return l;
}

static node *or_expr(parser *P) {
    node *l = and_expr(P);
    while (l && is_name(&P->t[P->i], "or")) {
        token *t = &P->t[P->i++];
        node *r = and_expr(P), *n = r ? mk(P, N_OR, t->line) : NULL;
        if (!n) return NULL;
        n->a = l, n->b = r;
        l = n;
    }
    return l;
}

// a if cond [else b]
static node *expr(parser *P) {
    if (++P->depth > 200) return P_FAIL(P, FK_ERR_UNSUPPORTED, "chat template line %d: expressions nested more than 200 deep", P->t[P->i].line);
    node *l = or_expr(P);
    while (l && is_name(&P->t[P->i], "if")) {
        token *t = &P->t[P->i++];
        node *c = or_expr(P), *e = NULL;
        if (!c) return NULL;
        if (is_name(&P->t[P->i], "else")) { P->i++; if (!(e = expr(P))) return NULL; }
        node *n = mk(P, N_COND, t->line);
        if (!n) return NULL;
        n->a = l, n->b = c, n->c = e;
        l = n;
    }
    P->depth--;
    return l;
}

static bool end_block(parser *P) {
    if (P->t[P->i].k == T_BE) { P->i++; return true; }
    char b[64];
    P->st = fk_error(FK_ERR_FORMAT, "chat template line %d: '%%}' expected, found %s", P->t[P->i].line, tok_desc(&P->t[P->i], b, sizeof b));
    return false;
}

// Statements up to (not including) a block whose keyword is one of stops (NULL-terminated);
// *stop gets which one (NULL at the end of the template).
static bool body(parser *P, nlist *out, const char *const *stops, const char **stop);

static node *stmt_if(parser *P, int line) {
    node *n = mk(P, N_IF, line);
    if (!n) return NULL;
    int cap = 0, bcap = 0;
    nlist bodies[256];
    for (;;) {
        node *c = expr(P);
        if (!c || !end_block(P) || !nl_push(P, &n->args, c, &cap)) return NULL;
        if (n->args.n > 256) return P_FAIL(P, FK_ERR_UNSUPPORTED, "chat template line %d: more than 256 elif branches", line);
        static const char *const stops[] = {"elif", "else", "endif", NULL};
        const char *stop;
        bodies[n->args.n - 1] = (nlist){0};
        if (!body(P, &bodies[n->args.n - 1], stops, &stop)) return NULL;
        if (!stop) return P_FAIL(P, FK_ERR_FORMAT, "chat template line %d: {%% if %%} is not closed by {%% endif %%}", line);
        P->i += 2;  // '{%' and the keyword
        if (strcmp(stop, "elif") == 0) continue;
        if (strcmp(stop, "else") == 0) {
            static const char *const end[] = {"endif", NULL};
            if (!end_block(P) || !body(P, &n->orelse, end, &stop)) return NULL;
            if (!stop) return P_FAIL(P, FK_ERR_FORMAT, "chat template line %d: {%% if %%} is not closed by {%% endif %%}", line);
            P->i += 2;
        }
        if (!end_block(P)) return NULL;
        break;
    }
    (void)bcap;
    n->bodies = aalloc(P->a, (size_t)n->args.n * sizeof(nlist));
    if (!n->bodies) return P_FAIL(P, FK_ERR_NOMEM, "out of memory");
    memcpy(n->bodies, bodies, (size_t)n->args.n * sizeof(nlist));
    return n;
}

static node *stmt_for(parser *P, int line) {
    node *n = mk(P, N_FOR, line);
    if (!n) return NULL;
    if (P->t[P->i].k != T_NAME) return P_FAIL(P, FK_ERR_FORMAT, "chat template line %d: a loop variable expected after 'for'", line);
    n->name = P->t[P->i++].s;
    if (is_op(&P->t[P->i], ",")) {
        P->i++;
        if (P->t[P->i].k != T_NAME) return P_FAIL(P, FK_ERR_FORMAT, "chat template line %d: a second loop variable expected", line);
        n->name2 = P->t[P->i++].s;
    }
    if (!is_name(&P->t[P->i], "in")) return P_FAIL(P, FK_ERR_FORMAT, "chat template line %d: 'in' expected in {%% for %%}", line);
    P->i++;
    if (!(n->a = or_expr(P))) return NULL;  // not expr(): a trailing "if" filters the loop
    if (is_name(&P->t[P->i], "if")) { P->i++; if (!(n->b = expr(P))) return NULL; }
    if (is_name(&P->t[P->i], "recursive")) return P_FAIL(P, FK_ERR_UNSUPPORTED, "chat template line %d: recursive loops are not supported", line);
    if (!end_block(P)) return NULL;
    static const char *const stops[] = {"else", "endfor", NULL};
    const char *stop;
    if (!body(P, &n->body, stops, &stop)) return NULL;
    if (!stop) return P_FAIL(P, FK_ERR_FORMAT, "chat template line %d: {%% for %%} is not closed by {%% endfor %%}", line);
    P->i += 2;
    if (strcmp(stop, "else") == 0) {
        static const char *const end[] = {"endfor", NULL};
        if (!end_block(P) || !body(P, &n->orelse, end, &stop)) return NULL;
        if (!stop) return P_FAIL(P, FK_ERR_FORMAT, "chat template line %d: {%% for %%} is not closed by {%% endfor %%}", line);
        P->i += 2;
    }
    return end_block(P) ? n : NULL;
}

static node *stmt_set(parser *P, int line) {
    node *n = mk(P, N_SET, line);
    if (!n) return NULL;
    if (P->t[P->i].k != T_NAME) return P_FAIL(P, FK_ERR_FORMAT, "chat template line %d: a name expected after 'set'", line);
    n->name = P->t[P->i++].s;
    if (is_op(&P->t[P->i], ".")) {
        if (P->t[P->i + 1].k != T_NAME) return P_FAIL(P, FK_ERR_FORMAT, "chat template line %d: an attribute expected", line);
        n->name2 = P->t[P->i + 1].s;
        P->i += 2;
    }
    if (is_op(&P->t[P->i], ",")) return P_FAIL(P, FK_ERR_UNSUPPORTED, "chat template line %d: {%% set a, b = ... %%} is not supported", line);
    if (P->t[P->i].k == T_BE && !n->name2.n) {  // {% set x %}...{% endset %}
        P->i++;
        n->k = N_SETBLOCK;
        static const char *const stops[] = {"endset", NULL};
        const char *stop;
        if (!body(P, &n->body, stops, &stop)) return NULL;
        if (!stop) return P_FAIL(P, FK_ERR_FORMAT, "chat template line %d: {%% set %%} is not closed by {%% endset %%}", line);
        P->i += 2;
        return end_block(P) ? n : NULL;
    }
    if (!expect_op(P, "=")) return NULL;
    if (!(n->a = expr(P))) return NULL;
    return end_block(P) ? n : NULL;
}

// {% macro name(a, b=default) %}...{% endmacro %}: args holds each parameter's default (NULL: none).
static node *stmt_macro(parser *P, int line) {
    node *n = mk(P, N_MACRO, line);
    if (!n) return NULL;
    if (P->t[P->i].k != T_NAME) return P_FAIL(P, FK_ERR_FORMAT, "chat template line %d: a macro name expected", line);
    n->name = P->t[P->i++].s;
    if (!expect_op(P, "(")) return NULL;
    str names[64];
    int cap = 0;
    while (!is_op(&P->t[P->i], ")")) {
        if (n->args.n >= 64) return P_FAIL(P, FK_ERR_UNSUPPORTED, "chat template line %d: a macro with more than 64 parameters", line);
        if (P->t[P->i].k != T_NAME) return P_FAIL(P, FK_ERR_FORMAT, "chat template line %d: a parameter name expected", line);
        names[n->args.n] = P->t[P->i++].s;
        node *def = NULL;
        if (is_op(&P->t[P->i], "=")) { P->i++; if (!(def = expr(P))) return NULL; }
        node *slot = mk(P, N_LIT, line);
        if (!slot) return NULL;
        slot->a = def;
        if (!nl_push(P, &n->args, slot, &cap)) return NULL;
        if (!is_op(&P->t[P->i], ")") && !expect_op(P, ",")) return NULL;
    }
    P->i++;
    if (n->args.n) {
        if (!(n->kw = aalloc(P->a, (size_t)n->args.n * sizeof(str)))) return P_FAIL(P, FK_ERR_NOMEM, "out of memory");
        memcpy(n->kw, names, (size_t)n->args.n * sizeof(str));
    }
    if (!end_block(P)) return NULL;
    static const char *const stops[] = {"endmacro", NULL};
    const char *stop;
    if (!body(P, &n->body, stops, &stop)) return NULL;
    if (!stop) return P_FAIL(P, FK_ERR_FORMAT, "chat template line %d: {%% macro %%} is not closed by {%% endmacro %%}", line);
    P->i += 2;
    return end_block(P) ? n : NULL;
}

static bool body(parser *P, nlist *out, const char *const *stops, const char **stop) {
    int cap = 0;
    *stop = NULL;
    if (++P->depth > 200) { P->st = fk_error(FK_ERR_UNSUPPORTED, "chat template line %d: blocks nested more than 200 deep", P->t[P->i].line); return false; }
    for (;;) {
        token *t = &P->t[P->i];
        node *n = NULL;
        if (t->k == T_EOF) break;
        if (t->k == T_TEXT) {
            P->i++;
            if (!(n = mk(P, N_TEXT, t->line))) return false;
            n->lit = vstr(t->s.s, t->s.n);
        } else if (t->k == T_VB) {
            P->i++;
            if (!(n = mk(P, N_OUT, t->line)) || !(n->a = expr(P))) return false;
            if (P->t[P->i].k != T_VE) {
                char b[64];
                P->st = fk_error(FK_ERR_FORMAT, "chat template line %d: '}}' expected, found %s", P->t[P->i].line, tok_desc(&P->t[P->i], b, sizeof b));
                return false;
            }
            P->i++;
        } else if (t->k == T_BB) {
            token *kw = &P->t[P->i + 1];
            if (kw->k != T_NAME) { P->st = fk_error(FK_ERR_FORMAT, "chat template line %d: a statement expected after '{%%'", kw->line); return false; }
            for (int s = 0; stops && stops[s]; s++)
                if (str_is(kw->s, stops[s])) { *stop = stops[s]; P->depth--; return true; }
            P->i += 2;
            if (str_is(kw->s, "if")) n = stmt_if(P, kw->line);
            else if (str_is(kw->s, "for")) n = stmt_for(P, kw->line);
            else if (str_is(kw->s, "set")) n = stmt_set(P, kw->line);
            else if (str_is(kw->s, "macro")) n = stmt_macro(P, kw->line);
            else if (str_is(kw->s, "break") || str_is(kw->s, "continue")) {
                if ((n = mk(P, str_is(kw->s, "break") ? N_BREAK : N_CONTINUE, kw->line)) && !end_block(P)) n = NULL;
            } else if (str_is(kw->s, "generation")) {  // transformers' assistant-mask marker: renders its body
                static const char *const end[] = {"endgeneration", NULL};
                const char *st;
                if (!end_block(P) || !(n = mk(P, N_IF, kw->line))) return false;
                int cap2 = 0;
                node *yes = mk(P, N_LIT, kw->line);
                if (!yes || !nl_push(P, &n->args, yes, &cap2)) return false;
                yes->lit = vbool(true);
                n->bodies = aalloc(P->a, sizeof(nlist));
                if (!n->bodies) { P->st = fk_error(FK_ERR_NOMEM, "out of memory"); return false; }
                *n->bodies = (nlist){0};
                if (!body(P, n->bodies, end, &st)) return false;
                if (!st) { P->st = fk_error(FK_ERR_FORMAT, "chat template line %d: {%% generation %%} is not closed", kw->line); return false; }
                P->i += 2;
                if (!end_block(P)) return false;
            } else {
                P->st = fk_error(stops || str_is(kw->s, "macro") || str_is(kw->s, "call") || str_is(kw->s, "include") ||
                                 str_is(kw->s, "import") || str_is(kw->s, "filter") || str_is(kw->s, "with") || str_is(kw->s, "block") ||
                                 str_is(kw->s, "extends") || str_is(kw->s, "raw") ? FK_ERR_UNSUPPORTED : FK_ERR_FORMAT,
                                 "chat template line %d: {%% %.*s %%} is not supported here", kw->line, (int)kw->s.n, kw->s.s);
                return false;
            }
            if (!n) return false;
        } else {
            char b[64];
            P->st = fk_error(FK_ERR_FORMAT, "chat template line %d: unexpected %s", t->line, tok_desc(t, b, sizeof b));
            return false;
        }
        if (!nl_push(P, out, n, &cap)) return false;
    }
    P->depth--;
    return true;
}

// ------------------------------------------------------------------ evaluation

typedef struct { str name; val v; } binding;
typedef struct frame { binding *b; int n, cap; struct frame *up; } frame;

typedef struct {
    arena *a;
    frame *top, *global;
    char *out;
    size_t len, cap;
    int64_t iterations, calls;
    int depth;            // macro calls in progress
    fk_status st;
    int line;
} ctx;

enum { CTL_NONE, CTL_BREAK, CTL_CONTINUE };
enum { F_RAISE = 1, F_STRFTIME, F_RANGE, F_NAMESPACE, F_METHOD, F_MACRO };

#define E_FAIL(C, st_, ...) ((C)->st = fk_error(st_, __VA_ARGS__), UNDEF)

static bool out_put(ctx *C, const char *s, size_t n) {
    if (C->len + n + 1 > C->cap) {
        if (C->len + n + 1 > FK_CHAT_MAX_OUTPUT) { C->st = fk_error(FK_ERR_ARG, "chat template line %d: the prompt passes %d MiB", C->line, FK_CHAT_MAX_OUTPUT >> 20); return false; }
        size_t cap = C->cap ? C->cap : 4096;
        while (cap < C->len + n + 1) cap *= 2;
        char *p = realloc(C->out, cap);
        if (!p) { C->st = fk_error(FK_ERR_NOMEM, "out of memory rendering a chat template"); return false; }
        C->out = p, C->cap = cap;
    }
    memcpy(C->out + C->len, s, n);
    C->len += n;
    C->out[C->len] = 0;
    return true;
}

static bool bind(ctx *C, frame *f, str name, val v) {
    for (int i = 0; i < f->n; i++)
        if (f->b[i].name.n == name.n && memcmp(f->b[i].name.s, name.s, name.n) == 0) { f->b[i].v = v; return true; }
    if (f->n == f->cap) {
        int cap = f->cap ? 2 * f->cap : 8;
        binding *b = aalloc(C->a, (size_t)cap * sizeof *b);
        if (!b) { C->st = fk_error(FK_ERR_NOMEM, "out of memory"); return false; }
        if (f->n) memcpy(b, f->b, (size_t)f->n * sizeof *b);
        f->b = b, f->cap = cap;
    }
    f->b[f->n++] = (binding){name, v};
    return true;
}

static val lookup(ctx *C, str name) {
    for (frame *f = C->top; f; f = f->up)
        for (int i = f->n - 1; i >= 0; i--)
            if (f->b[i].name.n == name.n && memcmp(f->b[i].name.s, name.s, name.n) == 0) return f->b[i].v;
    static const struct { const char *n; int id; } G[] = {{"raise_exception", F_RAISE}, {"strftime_now", F_STRFTIME}, {"range", F_RANGE}, {"namespace", F_NAMESPACE}};
    for (size_t g = 0; g < sizeof G / sizeof G[0]; g++)
        if (str_is(name, G[g].n)) { val v = {V_FUNC, {.fn = {G[g].id, NULL, G[g].n}}}; return v; }
    return UNDEF;
}

static vlist *new_list(ctx *C, int cap) {
    vlist *l = aalloc(C->a, sizeof *l);
    if (!l) { C->st = fk_error(FK_ERR_NOMEM, "out of memory"); return NULL; }
    l->n = 0, l->cap = cap > 0 ? cap : 4;
    if (!(l->v = aalloc(C->a, (size_t)l->cap * sizeof(val)))) { C->st = fk_error(FK_ERR_NOMEM, "out of memory"); return NULL; }
    return l;
}

static bool list_push(ctx *C, vlist *l, val v) {
    if (l->n == l->cap) {
        val *p = aalloc(C->a, (size_t)l->cap * 2 * sizeof(val));
        if (!p) { C->st = fk_error(FK_ERR_NOMEM, "out of memory"); return false; }
        memcpy(p, l->v, (size_t)l->n * sizeof(val));
        l->v = p, l->cap *= 2;
    }
    l->v[l->n++] = v;
    return true;
}

static vdict *new_dict(ctx *C) {
    vdict *d = aalloc(C->a, sizeof *d);
    if (!d) { C->st = fk_error(FK_ERR_NOMEM, "out of memory"); return NULL; }
    memset(d, 0, sizeof *d);
    return d;
}

static bool dict_set(ctx *C, vdict *d, str k, val v) {
    for (int i = 0; i < d->n; i++)
        if (d->k[i].n == k.n && memcmp(d->k[i].s, k.s, k.n) == 0) { d->v[i] = v; return true; }
    if (d->n == d->cap) {
        int cap = d->cap ? 2 * d->cap : 8;
        str *kk = aalloc(C->a, (size_t)cap * sizeof(str));
        val *vv = aalloc(C->a, (size_t)cap * sizeof(val));
        if (!kk || !vv) { C->st = fk_error(FK_ERR_NOMEM, "out of memory"); return false; }
        if (d->n) { memcpy(kk, d->k, (size_t)d->n * sizeof(str)); memcpy(vv, d->v, (size_t)d->n * sizeof(val)); }
        d->k = kk, d->v = vv, d->cap = cap;
    }
    d->k[d->n] = k, d->v[d->n] = v;
    d->n++;
    return true;
}

static val dict_get(const vdict *d, str k) {
    for (int i = 0; i < d->n; i++)
        if (d->k[i].n == k.n && memcmp(d->k[i].s, k.s, k.n) == 0) return d->v[i];
    return UNDEF;
}

static bool truthy(val v) {
    switch (v.k) {
    case V_BOOL: return v.u.b;
    case V_INT: return v.u.i != 0;
    case V_FLOAT: return v.u.f != 0;
    case V_STR: return v.u.s.n > 0;
    case V_LIST: return v.u.l->n > 0;
    case V_DICT: return v.u.d->n > 0;
    case V_FUNC: return true;
    default: return false;
    }
}

// A value's kind with its article, for messages ("an integer", "a string").
static const char *kind_a(val v) {
    static const char *const names[] = {"an undefined value", "None", "a boolean", "an integer", "a float", "a string", "a list", "a dict",
                                        "a function"};
    return names[v.k];
}

// A growable string in the arena.
typedef struct { ctx *C; char *s; size_t n, cap; } sbuf;

static bool sb_put(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        if (b->n + n + 1 > FK_CHAT_MAX_OUTPUT) { b->C->st = fk_error(FK_ERR_ARG, "chat template line %d: a string passes %d MiB", b->C->line, FK_CHAT_MAX_OUTPUT >> 20); return false; }
        size_t cap = b->cap ? 2 * b->cap : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = aalloc(b->C->a, cap);
        if (!p) { b->C->st = fk_error(FK_ERR_NOMEM, "out of memory"); return false; }
        if (b->n) memcpy(p, b->s, b->n);
        b->s = p, b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
    return true;
}

static bool sb_putz(sbuf *b, const char *s) { return sb_put(b, s, strlen(s)); }
static val sb_val(sbuf *b) { return b->s ? vstr(b->s, b->n) : vstr("", 0); }

static bool repr(sbuf *b, val v, bool quote);

// Python's float repr for the common cases: shortest round-trip digits, ".0" for integral values.
static bool put_float(sbuf *b, double f) {
    char buf[40];
    if (isnan(f)) return sb_putz(b, "nan");
    if (isinf(f)) return sb_putz(b, f > 0 ? "inf" : "-inf");
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, f);
        if (strtod(buf, NULL) == f) break;
    }
    if (!strpbrk(buf, ".eni")) strcat(buf, ".0");
    return sb_putz(b, buf);
}

// str(v) (quote: repr(v), as inside a list or dict).
static bool repr(sbuf *b, val v, bool quote) {
    char buf[32];
    switch (v.k) {
    case V_UNDEF: return quote ? sb_putz(b, "Undefined") : true;
    case V_NONE: return sb_putz(b, "None");
    case V_BOOL: return sb_putz(b, v.u.b ? "True" : "False");
    case V_INT: snprintf(buf, sizeof buf, "%" PRId64, v.u.i); return sb_putz(b, buf);
    case V_FLOAT: return put_float(b, v.u.f);
    case V_STR: {
        if (!quote) return sb_put(b, v.u.s.s, v.u.s.n);
        bool sq = memchr(v.u.s.s, '\'', v.u.s.n) && !memchr(v.u.s.s, '"', v.u.s.n);
        if (!sb_putz(b, sq ? "\"" : "'")) return false;
        for (size_t i = 0; i < v.u.s.n; i++) {
            char c = v.u.s.s[i];
            const char *e = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : c == '\\' ? "\\\\" : (!sq && c == '\'') ? "\\'" : NULL;
            if (!(e ? sb_putz(b, e) : sb_put(b, &c, 1))) return false;
        }
        return sb_putz(b, sq ? "\"" : "'");
    }
    case V_LIST:
        if (!sb_putz(b, "[")) return false;
        for (int i = 0; i < v.u.l->n; i++)
            if ((i && !sb_putz(b, ", ")) || !repr(b, v.u.l->v[i], true)) return false;
        return sb_putz(b, "]");
    case V_DICT:
        if (!sb_putz(b, "{")) return false;
        for (int i = 0; i < v.u.d->n; i++)
            if ((i && !sb_putz(b, ", ")) || !repr(b, key_val(v.u.d->k[i]), true) || !sb_putz(b, ": ") ||
                !repr(b, v.u.d->v[i], true))
                return false;
        return sb_putz(b, "}");
    case V_FUNC: return sb_putz(b, "<function>");
    }
    return true;
}

static val to_str(ctx *C, val v) {
    if (v.k == V_STR) return v;
    sbuf b = {C, NULL, 0, 0};
    return repr(&b, v, false) ? sb_val(&b) : UNDEF;
}

// json.dumps as transformers' tojson calls it: ensure_ascii False, separators (", ", ": ")
// (",", ": " with an indent), keys in order.
static bool to_json(sbuf *b, val v, int indent, int level) {
    char nl[130];
    switch (v.k) {
    case V_UNDEF: case V_NONE: return sb_putz(b, "null");
    case V_BOOL: return sb_putz(b, v.u.b ? "true" : "false");
    case V_INT: case V_FLOAT: return repr(b, v, false);
    case V_STR:
        if (!sb_putz(b, "\"")) return false;
        for (size_t i = 0; i < v.u.s.n; i++) {
            unsigned char c = (unsigned char)v.u.s.s[i];
            char e[8];
            if (c == '"') strcpy(e, "\\\"");
            else if (c == '\\') strcpy(e, "\\\\");
            else if (c == '\n') strcpy(e, "\\n");
            else if (c == '\t') strcpy(e, "\\t");
            else if (c == '\r') strcpy(e, "\\r");
            else if (c == '\b') strcpy(e, "\\b");
            else if (c == '\f') strcpy(e, "\\f");
            else if (c < 0x20) snprintf(e, sizeof e, "\\u%04x", c);
            else { e[0] = (char)c; e[1] = 0; }
            if (!sb_putz(b, e)) return false;
        }
        return sb_putz(b, "\"");
    case V_LIST: case V_DICT: {
        bool list = v.k == V_LIST;
        int n = list ? v.u.l->n : v.u.d->n;
        if (n == 0) return sb_putz(b, list ? "[]" : "{}");
        if (!sb_putz(b, list ? "[" : "{")) return false;
        int pad = indent > 0 ? indent * (level + 1) : 0;
        if (pad > 120) pad = 120;
        nl[0] = '\n';
        memset(nl + 1, ' ', (size_t)pad);
        nl[pad + 1] = 0;
        for (int i = 0; i < n; i++) {
            if (i && !sb_putz(b, indent > 0 ? "," : ", ")) return false;
            if (indent > 0 && !sb_putz(b, nl)) return false;
            str key = v.u.d->k[i];
            if (key.n > 1 && key.s[0] == '\x01') key = (str){key.s + 1, key.n - 1};  // json.dumps writes integer keys as strings
            if (!list && (!to_json(b, vstr(key.s, key.n), indent, level + 1) || !sb_putz(b, ": "))) return false;
            if (!to_json(b, list ? v.u.l->v[i] : v.u.d->v[i], indent, level + 1)) return false;
        }
        if (indent > 0) {
            int p2 = indent * level > 120 ? 120 : indent * level;
            nl[p2 + 1] = 0;
            if (!sb_putz(b, nl)) return false;
        }
        return sb_putz(b, list ? "]" : "}");
    }
    case V_FUNC: return sb_putz(b, "null");
    }
    return true;
}

static bool equal(val a, val b) {
    if ((a.k == V_INT || a.k == V_FLOAT || a.k == V_BOOL) && (b.k == V_INT || b.k == V_FLOAT || b.k == V_BOOL)) {
        double x = a.k == V_INT ? (double)a.u.i : a.k == V_FLOAT ? a.u.f : a.u.b, y = b.k == V_INT ? (double)b.u.i : b.k == V_FLOAT ? b.u.f : b.u.b;
        return x == y;
    }
    if (a.k != b.k) return false;
    switch (a.k) {
    case V_UNDEF: case V_NONE: return true;
    case V_STR: return a.u.s.n == b.u.s.n && memcmp(a.u.s.s, b.u.s.s, a.u.s.n) == 0;
    case V_LIST:
        if (a.u.l->n != b.u.l->n) return false;
        for (int i = 0; i < a.u.l->n; i++) if (!equal(a.u.l->v[i], b.u.l->v[i])) return false;
        return true;
    case V_DICT:
        if (a.u.d->n != b.u.d->n) return false;
        for (int i = 0; i < a.u.d->n; i++) if (!equal(a.u.d->v[i], dict_get(b.u.d, a.u.d->k[i]))) return false;
        return true;
    default: return a.u.fn.id == b.u.fn.id && a.u.fn.self == b.u.fn.self;
    }
}

static val eval(ctx *C, const node *n);

static bool str_contains(str hay, str needle) {
    if (needle.n == 0) return true;
    for (size_t i = 0; i + needle.n <= hay.n; i++)
        if (memcmp(hay.s + i, needle.s, needle.n) == 0) return true;
    return false;
}

static val contains(ctx *C, val hay, val x) {
    if (hay.k == V_STR && x.k == V_STR) return vbool(str_contains(hay.u.s, x.u.s));
    if (hay.k == V_LIST) {
        for (int i = 0; i < hay.u.l->n; i++) if (equal(hay.u.l->v[i], x)) return vbool(true);
        return vbool(false);
    }
    if (hay.k == V_DICT && x.k == V_STR) return vbool(dict_get(hay.u.d, x.u.s).k != V_UNDEF);
    if (hay.k == V_UNDEF) return vbool(false);  // Jinja's Undefined is an empty container
    return E_FAIL(C, FK_ERR_ARG, "chat template line %d: 'in' over %s", C->line, kind_a(hay));
}

static int cmp_num(val a, val b, bool *ok) {
    *ok = true;
    if (a.k == V_STR && b.k == V_STR) {
        size_t m = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
        int c = memcmp(a.u.s.s, b.u.s.s, m);
        return c ? c : (a.u.s.n > b.u.s.n) - (a.u.s.n < b.u.s.n);
    }
    if ((a.k == V_INT || a.k == V_FLOAT || a.k == V_BOOL) && (b.k == V_INT || b.k == V_FLOAT || b.k == V_BOOL)) {
        double x = a.k == V_INT ? (double)a.u.i : a.k == V_FLOAT ? a.u.f : a.u.b, y = b.k == V_INT ? (double)b.u.i : b.k == V_FLOAT ? b.u.f : b.u.b;
        return (x > y) - (x < y);
    }
    *ok = false;
    return 0;
}

static val binop(ctx *C, str op, val a, val b) {
    if (str_is(op, "~")) {
        sbuf s = {C, NULL, 0, 0};
        if (!repr(&s, a, false) || !repr(&s, b, false)) return UNDEF;
        return sb_val(&s);
    }
    if (str_is(op, "in")) return contains(C, b, a);
    if (str_is(op, "==")) return vbool(equal(a, b));
    if (str_is(op, "!=")) return vbool(!equal(a, b));
    if (op.s[0] == '<' || op.s[0] == '>') {
        bool ok;
        int c = cmp_num(a, b, &ok);
        if (!ok) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: '%.*s' between %s and %s", C->line, (int)op.n, op.s, kind_a(a), kind_a(b));
        return vbool(str_is(op, "<") ? c < 0 : str_is(op, ">") ? c > 0 : str_is(op, "<=") ? c <= 0 : c >= 0);
    }
    if (str_is(op, "+") && a.k == V_STR && b.k == V_STR) {
        sbuf s = {C, NULL, 0, 0};
        if (!sb_put(&s, a.u.s.s, a.u.s.n) || !sb_put(&s, b.u.s.s, b.u.s.n)) return UNDEF;
        return sb_val(&s);
    }
    if (str_is(op, "+") && a.k == V_LIST && b.k == V_LIST) {
        vlist *l = new_list(C, a.u.l->n + b.u.l->n);
        if (!l) return UNDEF;
        for (int i = 0; i < a.u.l->n; i++) list_push(C, l, a.u.l->v[i]);
        for (int i = 0; i < b.u.l->n; i++) list_push(C, l, b.u.l->v[i]);
        val v = {V_LIST, {.l = l}};
        return v;
    }
    if (str_is(op, "*") && ((a.k == V_STR && b.k == V_INT) || (a.k == V_INT && b.k == V_STR))) {
        val s = a.k == V_STR ? a : b;
        int64_t k = a.k == V_INT ? a.u.i : b.u.i;
        sbuf r = {C, NULL, 0, 0};
        for (int64_t i = 0; i < k; i++) if (!sb_put(&r, s.u.s.s, s.u.s.n)) return UNDEF;
        return sb_val(&r);
    }
    bool num_a = a.k == V_INT || a.k == V_FLOAT || a.k == V_BOOL, num_b = b.k == V_INT || b.k == V_FLOAT || b.k == V_BOOL;
    if (!num_a || !num_b)
        return E_FAIL(C, FK_ERR_ARG, "chat template line %d: '%.*s' between %s and %s", C->line, (int)op.n, op.s, kind_a(a), kind_a(b));
    bool fl = a.k == V_FLOAT || b.k == V_FLOAT || str_is(op, "/");
    if (fl) {
        double x = a.k == V_INT ? (double)a.u.i : a.k == V_FLOAT ? a.u.f : a.u.b, y = b.k == V_INT ? (double)b.u.i : b.k == V_FLOAT ? b.u.f : b.u.b;
        if ((str_is(op, "/") || str_is(op, "//") || str_is(op, "%")) && y == 0) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: division by zero", C->line);
        double r = str_is(op, "+") ? x + y : str_is(op, "-") ? x - y : str_is(op, "*") ? x * y : str_is(op, "/") ? x / y :
                   str_is(op, "//") ? floor(x / y) : str_is(op, "%") ? x - y * floor(x / y) : pow(x, y);
        return vfloat(r);
    }
    int64_t x = a.k == V_INT ? a.u.i : a.u.b, y = b.k == V_INT ? b.u.i : b.u.b;
    if ((str_is(op, "//") || str_is(op, "%")) && y == 0) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: division by zero", C->line);
    if (str_is(op, "+")) return vint(x + y);
    if (str_is(op, "-")) return vint(x - y);
    if (str_is(op, "*")) return vint(x * y);
    if (str_is(op, "//")) { int64_t q = x / y; if ((x % y != 0) && ((x < 0) != (y < 0))) q--; return vint(q); }
    if (str_is(op, "%")) { int64_t r = x % y; if (r != 0 && ((r < 0) != (y < 0))) r += y; return vint(r); }
    return vfloat(pow((double)x, (double)y));
}

static int64_t seq_len(val v) { return v.k == V_STR ? (int64_t)v.u.s.n : v.k == V_LIST ? v.u.l->n : v.k == V_DICT ? v.u.d->n : -1; }

// An integer dict key, held as "\x01" and its digits (string keys cannot start with 0x01 in practice).
static str int_key(ctx *C, int64_t i) {
    char b[32];
    int n = snprintf(b, sizeof b, "\x01%" PRId64, i);
    char *p = aalloc(C->a, (size_t)n + 1);
    if (!p) { C->st = fk_error(FK_ERR_NOMEM, "out of memory"); return (str){"", 0}; }
    memcpy(p, b, (size_t)n + 1);
    return (str){p, (size_t)n};
}

static val item(ctx *C, val o, val k) {
    if (o.k == V_DICT) {
        if (k.k == V_INT) return dict_get(o.u.d, int_key(C, k.u.i));
        if (k.k != V_STR) return UNDEF;
        return dict_get(o.u.d, k.u.s);
    }
    if ((o.k == V_LIST || o.k == V_STR) && k.k == V_INT) {
        int64_t n = seq_len(o), i = k.u.i < 0 ? k.u.i + n : k.u.i;
        if (i < 0 || i >= n) return UNDEF;  // Jinja: an undefined value, an error only when used
        return o.k == V_LIST ? o.u.l->v[i] : vstr(o.u.s.s + i, 1);
    }
    if (o.k == V_UNDEF) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: indexing an undefined value", C->line);
    return UNDEF;
}

static val slice(ctx *C, val o, val lo, val hi, val step) {
    int64_t n = seq_len(o);
    if (n < 0 || o.k == V_DICT) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: slicing %s", C->line, kind_a(o));
    int64_t st = step.k == V_INT ? step.u.i : 1;
    if (st == 0) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: slice step 0", C->line);
    int64_t a, b;
    if (st > 0) {
        a = lo.k == V_INT ? lo.u.i : 0, b = hi.k == V_INT ? hi.u.i : n;
        if (a < 0) a += n;
        if (b < 0) b += n;
        a = a < 0 ? 0 : a > n ? n : a;
        b = b < 0 ? 0 : b > n ? n : b;
    } else {
        a = lo.k == V_INT ? lo.u.i : n - 1, b = hi.k == V_INT ? hi.u.i : -n - 1;
        if (a < 0) a += n;
        if (b < 0) b += n;
        a = a < -1 ? -1 : a > n - 1 ? n - 1 : a;
        b = b < -1 ? -1 : b > n - 1 ? n - 1 : b;
    }
    if (o.k == V_STR) {
        sbuf s = {C, NULL, 0, 0};
        for (int64_t i = a; st > 0 ? i < b : i > b; i += st) if (!sb_put(&s, o.u.s.s + i, 1)) return UNDEF;
        return sb_val(&s);
    }
    vlist *l = new_list(C, 4);
    if (!l) return UNDEF;
    for (int64_t i = a; st > 0 ? i < b : i > b; i += st) if (!list_push(C, l, o.u.l->v[i])) return UNDEF;
    val v = {V_LIST, {.l = l}};
    return v;
}

// Positional argument i, or the keyword one named kw, or UNDEF.
static val arg(const val *args, const str *kws, int n, int i, const char *kw) {
    int pos = 0;
    for (int j = 0; j < n; j++) {
        if (kws && kws[j].n) { if (kw && str_is(kws[j], kw)) return args[j]; continue; }
        if (pos++ == i) return args[j];
    }
    return UNDEF;
}

static bool is_ws(char c, str chars) { return chars.s ? memchr(chars.s, c, chars.n) != NULL : isspace((unsigned char)c); }

static val strip(val s, val chars, bool left, bool right) {
    str cs = chars.k == V_STR ? chars.u.s : (str){0};
    size_t b = 0, e = s.u.s.n;
    if (left) while (b < e && is_ws(s.u.s.s[b], cs)) b++;
    if (right) while (e > b && is_ws(s.u.s.s[e - 1], cs)) e--;
    return vstr(s.u.s.s + b, e - b);
}

static val case_map(ctx *C, val s, int how) {  // 0 upper, 1 lower, 2 capitalize, 3 title
    char *p = aalloc(C->a, s.u.s.n + 1);
    if (!p) return E_FAIL(C, FK_ERR_NOMEM, "out of memory");
    bool start = true;
    for (size_t i = 0; i < s.u.s.n; i++) {
        unsigned char c = (unsigned char)s.u.s.s[i];
        if (how == 0) c = (unsigned char)toupper(c);
        else if (how == 1) c = (unsigned char)tolower(c);
        else if (how == 2) c = (unsigned char)(i == 0 ? toupper(c) : tolower(c));
        else { c = (unsigned char)(start ? toupper(c) : tolower(c)); start = !isalnum(c); }
        p[i] = (char)c;
    }
    p[s.u.s.n] = 0;
    return vstr(p, s.u.s.n);
}

static val replace(ctx *C, val s, val a, val b) {
    if (a.k != V_STR || b.k != V_STR) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: replace() needs two strings", C->line);
    sbuf r = {C, NULL, 0, 0};
    if (!sb_put(&r, "", 0)) return UNDEF;
    for (size_t i = 0; i < s.u.s.n;) {
        if (a.u.s.n && i + a.u.s.n <= s.u.s.n && memcmp(s.u.s.s + i, a.u.s.s, a.u.s.n) == 0) {
            if (!sb_put(&r, b.u.s.s, b.u.s.n)) return UNDEF;
            i += a.u.s.n;
        } else if (!sb_put(&r, s.u.s.s + i++, 1)) return UNDEF;
    }
    return sb_val(&r);
}

static val split(ctx *C, val s, val sep) {
    vlist *l = new_list(C, 4);
    if (!l) return UNDEF;
    const char *p = s.u.s.s, *e = p + s.u.s.n;
    if (sep.k != V_STR) {  // whitespace runs, no empty pieces
        while (p < e) {
            while (p < e && isspace((unsigned char)*p)) p++;
            const char *q = p;
            while (q < e && !isspace((unsigned char)*q)) q++;
            if (q > p && !list_push(C, l, vstr(p, (size_t)(q - p)))) return UNDEF;
            p = q;
        }
    } else {
        if (sep.u.s.n == 0) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: split() with an empty separator", C->line);
        for (;;) {
            const char *q = p;
            while (q + sep.u.s.n <= e && memcmp(q, sep.u.s.s, sep.u.s.n) != 0) q++;
            if (q + sep.u.s.n > e) { if (!list_push(C, l, vstr(p, (size_t)(e - p)))) return UNDEF; break; }
            if (!list_push(C, l, vstr(p, (size_t)(q - p)))) return UNDEF;
            p = q + sep.u.s.n;
        }
    }
    val v = {V_LIST, {.l = l}};
    return v;
}

static val dict_items(ctx *C, const vdict *d, int which) {  // 0 items, 1 keys, 2 values
    vlist *l = new_list(C, d->n);
    if (!l) return UNDEF;
    for (int i = 0; i < d->n; i++) {
        val k = key_val(d->k[i]);
        if (which == 0) {
            vlist *pair = new_list(C, 2);
            if (!pair) return UNDEF;
            list_push(C, pair, k);
            list_push(C, pair, d->v[i]);
            val p = {V_LIST, {.l = pair}};
            if (!list_push(C, l, p)) return UNDEF;
        } else if (!list_push(C, l, which == 1 ? k : d->v[i])) return UNDEF;
    }
    val v = {V_LIST, {.l = l}};
    return v;
}

static val call_method(ctx *C, val self, const char *m, const val *a, const str *kw, int na) {
    val a0 = arg(a, kw, na, 0, NULL), a1 = arg(a, kw, na, 1, NULL);
    if (self.k == V_STR) {
        if (!strcmp(m, "strip")) return strip(self, a0, true, true);
        if (!strcmp(m, "lstrip")) return strip(self, a0, true, false);
        if (!strcmp(m, "rstrip")) return strip(self, a0, false, true);
        if (!strcmp(m, "upper")) return case_map(C, self, 0);
        if (!strcmp(m, "lower")) return case_map(C, self, 1);
        if (!strcmp(m, "capitalize")) return case_map(C, self, 2);
        if (!strcmp(m, "title")) return case_map(C, self, 3);
        if (!strcmp(m, "split")) return split(C, self, a0);
        if (!strcmp(m, "replace")) return replace(C, self, a0, a1);
        if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
            if (a0.k != V_STR) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: %s() needs a string", C->line, m);
            str s = self.u.s, x = a0.u.s;
            bool start = m[0] == 's';
            return vbool(x.n <= s.n && memcmp(start ? s.s : s.s + s.n - x.n, x.s, x.n) == 0);
        }
        if (!strcmp(m, "format")) {  // "{}" and "{N}" fields, positional arguments only
            sbuf b = {C, NULL, 0, 0};
            if (!sb_put(&b, "", 0)) return UNDEF;
            int next = 0;
            for (size_t i = 0; i < self.u.s.n; i++) {
                char c = self.u.s.s[i];
                if ((c == '{' || c == '}') && i + 1 < self.u.s.n && self.u.s.s[i + 1] == c) { if (!sb_put(&b, &c, 1)) return UNDEF; i++; continue; }
                if (c != '{') { if (!sb_put(&b, &c, 1)) return UNDEF; continue; }
                size_t j = i + 1;
                int idx = -1;
                while (j < self.u.s.n && isdigit((unsigned char)self.u.s.s[j])) idx = (idx < 0 ? 0 : idx * 10) + (self.u.s.s[j++] - '0');
                if (j >= self.u.s.n || self.u.s.s[j] != '}' || idx > 63)
                    return E_FAIL(C, FK_ERR_UNSUPPORTED, "chat template line %d: format() fields other than {} and {N}", C->line);
                if (idx < 0) idx = next++;
                if (idx >= na) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: format() has no argument %d", C->line, idx);
                if (!repr(&b, a[idx], false)) return UNDEF;
                i = j;
            }
            return sb_val(&b);
        }
        if (!strcmp(m, "find") || !strcmp(m, "count")) {
            if (a0.k != V_STR) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: %s() needs a string", C->line, m);
            int64_t first = -1, count = 0;
            for (size_t i = 0; i + a0.u.s.n <= self.u.s.n;) {
                if (memcmp(self.u.s.s + i, a0.u.s.s, a0.u.s.n) == 0) {
                    if (first < 0) first = (int64_t)i;
                    count++;
                    i += a0.u.s.n ? a0.u.s.n : 1;
                } else i++;
            }
            return vint(m[0] == 'f' ? first : count);
        }
    } else if (self.k == V_DICT) {
        if (!strcmp(m, "get")) { val v = a0.k == V_STR ? dict_get(self.u.d, a0.u.s) : UNDEF; return v.k == V_UNDEF ? (na > 1 ? a1 : NONE) : v; }
        if (!strcmp(m, "items")) return dict_items(C, self.u.d, 0);
        if (!strcmp(m, "keys")) return dict_items(C, self.u.d, 1);
        if (!strcmp(m, "values")) return dict_items(C, self.u.d, 2);
    }
    return E_FAIL(C, FK_ERR_UNSUPPORTED, "chat template line %d: the method %s() of %s is not supported", C->line, m, kind_a(self));
}

static int exec(ctx *C, const nlist *body);

// A macro's body rendered into a string, in a scope of its parameters over the template's globals.
static val call_macro(ctx *C, const node *m, const val *a, const str *kw, int na) {
    if (++C->calls > 10000) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: more than 10,000 macro calls", C->line);
    if (C->depth >= 64) return E_FAIL(C, FK_ERR_UNSUPPORTED, "chat template line %d: macros nested more than 64 deep", C->line);
    frame f = {NULL, 0, 0, C->global};
    frame *saved_top = C->top;
    C->top = &f;
    int pos = 0;
    for (int i = 0; i < na && C->st == FK_OK; i++) {
        if (kw && kw[i].n) {
            int p = 0;
            while (p < m->args.n && !(m->kw[p].n == kw[i].n && memcmp(m->kw[p].s, kw[i].s, kw[i].n) == 0)) p++;
            if (p == m->args.n) { C->st = fk_error(FK_ERR_ARG, "chat template line %d: macro '%.*s' has no parameter '%.*s'", C->line, (int)m->name.n, m->name.s, (int)kw[i].n, kw[i].s); break; }
            bind(C, &f, m->kw[p], a[i]);
        } else if (pos < m->args.n) bind(C, &f, m->kw[pos++], a[i]);
    }
    for (int p = 0; p < m->args.n && C->st == FK_OK; p++) {
        bool given = false;
        for (int j = 0; j < f.n; j++) given |= f.b[j].name.n == m->kw[p].n && memcmp(f.b[j].name.s, m->kw[p].s, m->kw[p].n) == 0;
        if (!given) bind(C, &f, m->kw[p], m->args.v[p]->a ? eval(C, m->args.v[p]->a) : UNDEF);
    }
    char *saved = C->out;
    size_t len = C->len, cap = C->cap;
    C->out = NULL, C->len = 0, C->cap = 0;
    C->depth++;
    if (C->st == FK_OK) exec(C, &m->body);
    C->depth--;
    char *got = C->out;
    size_t glen = C->len;
    C->out = saved, C->len = len, C->cap = cap;
    C->top = saved_top;
    val r = UNDEF;
    if (C->st == FK_OK) {
        char *p = aalloc(C->a, glen + 1);
        if (!p) C->st = fk_error(FK_ERR_NOMEM, "out of memory");
        else { if (glen) memcpy(p, got, glen); p[glen] = 0; r = vstr(p, glen); }
    }
    free(got);
    return r;
}

static val call(ctx *C, val f, const val *a, const str *kw, int na) {
    if (f.k != V_FUNC) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: calling %s", C->line, kind_a(f));
    if (f.u.fn.id == F_MACRO) return call_macro(C, f.u.fn.macro, a, kw, na);
    if (f.u.fn.id == F_METHOD) return call_method(C, *f.u.fn.self, f.u.fn.name, a, kw, na);
    if (f.u.fn.id == F_RAISE) {
        val m = to_str(C, arg(a, kw, na, 0, NULL));
        return E_FAIL(C, FK_ERR_ARG, "chat template: %.*s", (int)(m.k == V_STR ? m.u.s.n : 0), m.k == V_STR ? m.u.s.s : "");
    }
    if (f.u.fn.id == F_STRFTIME) {
        val fmt = arg(a, kw, na, 0, NULL);
        if (fmt.k != V_STR) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: strftime_now() needs a format", C->line);
        char zf[256], buf[256];
        snprintf(zf, sizeof zf, "%.*s", (int)(fmt.u.s.n < 255 ? fmt.u.s.n : 255), fmt.u.s.s);
        // SOURCE_DATE_EPOCH (the reproducible-builds convention), when set to a number of seconds, is "now"
        time_t now = time(NULL);
        const char *sde = getenv("SOURCE_DATE_EPOCH");
        if (sde && *sde) {
            char *end;
            long long v = strtoll(sde, &end, 10);
            if (*end == 0 && v >= 0) now = (time_t)v;
        }
        struct tm tm;
        localtime_r(&now, &tm);
        size_t k = strftime(buf, sizeof buf, zf, &tm);
        char *p = aalloc(C->a, k + 1);
        if (!p) return E_FAIL(C, FK_ERR_NOMEM, "out of memory");
        memcpy(p, buf, k + 1);
        return vstr(p, k);
    }
    if (f.u.fn.id == F_RANGE) {
        int64_t lo = 0, hi, st = 1;
        val x = arg(a, kw, na, 0, NULL), y = arg(a, kw, na, 1, NULL), z = arg(a, kw, na, 2, NULL);
        if (x.k != V_INT || (y.k != V_UNDEF && y.k != V_INT) || (z.k != V_UNDEF && z.k != V_INT))
            return E_FAIL(C, FK_ERR_ARG, "chat template line %d: range() needs integers", C->line);
        if (y.k == V_UNDEF) hi = x.u.i; else { lo = x.u.i; hi = y.u.i; }
        if (z.k == V_INT) st = z.u.i;
        if (st == 0) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: range() step 0", C->line);
        if ((hi - lo) / st > 1000000) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: range() of more than 10^6 values", C->line);
        vlist *l = new_list(C, 8);
        if (!l) return UNDEF;
        for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) if (!list_push(C, l, vint(i))) return UNDEF;
        val v = {V_LIST, {.l = l}};
        return v;
    }
    // namespace(name=value, ...)
    vdict *d = new_dict(C);
    if (!d) return UNDEF;
    d->ns = true;
    for (int i = 0; i < na; i++)
        if (kw && kw[i].n && !dict_set(C, d, kw[i], a[i])) return UNDEF;
    val v = {V_DICT, {.d = d}};
    return v;
}

static bool test(ctx *C, const char *t, val x, const val *a, const str *kw, int na, bool *ok) {
    *ok = true;
    val a0 = arg(a, kw, na, 0, NULL);
    if (!strcmp(t, "defined")) return x.k != V_UNDEF;
    if (!strcmp(t, "undefined")) return x.k == V_UNDEF;
    if (!strcmp(t, "none")) return x.k == V_NONE;
    if (!strcmp(t, "string")) return x.k == V_STR;
    if (!strcmp(t, "number")) return x.k == V_INT || x.k == V_FLOAT;
    if (!strcmp(t, "integer")) return x.k == V_INT;
    if (!strcmp(t, "float")) return x.k == V_FLOAT;
    if (!strcmp(t, "boolean")) return x.k == V_BOOL;
    if (!strcmp(t, "true")) return x.k == V_BOOL && x.u.b;
    if (!strcmp(t, "false")) return x.k == V_BOOL && !x.u.b;
    if (!strcmp(t, "mapping")) return x.k == V_DICT;
    if (!strcmp(t, "iterable")) return x.k == V_STR || x.k == V_LIST || x.k == V_DICT;
    if (!strcmp(t, "sequence")) return x.k == V_STR || x.k == V_LIST || x.k == V_DICT;
    if (!strcmp(t, "callable")) return x.k == V_FUNC;
    if (!strcmp(t, "odd") || !strcmp(t, "even")) {
        if (x.k != V_INT) { *ok = false; C->st = fk_error(FK_ERR_ARG, "chat template line %d: '%s' of %s", C->line, t, kind_a(x)); return false; }
        return (x.u.i % 2 != 0) == (t[0] == 'o');
    }
    if (!strcmp(t, "divisibleby")) {
        if (x.k != V_INT || a0.k != V_INT || a0.u.i == 0) { *ok = false; C->st = fk_error(FK_ERR_ARG, "chat template line %d: 'divisibleby' needs integers", C->line); return false; }
        return x.u.i % a0.u.i == 0;
    }
    if (!strcmp(t, "eq") || !strcmp(t, "equalto") || !strcmp(t, "sameas") || !strcmp(t, "==")) return equal(x, a0);
    if (!strcmp(t, "ne") || !strcmp(t, "!=")) return !equal(x, a0);
    *ok = false;
    C->st = fk_error(FK_ERR_UNSUPPORTED, "chat template line %d: the test '%s' is not supported", C->line, t);
    return false;
}

static val list_of(ctx *C, val x) {
    if (x.k == V_LIST) return x;
    if (x.k == V_DICT) return dict_items(C, x.u.d, 1);
    if (x.k == V_STR) {
        vlist *l = new_list(C, (int)x.u.s.n + 1);
        if (!l) return UNDEF;
        for (size_t i = 0; i < x.u.s.n; i++) if (!list_push(C, l, vstr(x.u.s.s + i, 1))) return UNDEF;
        val v = {V_LIST, {.l = l}};
        return v;
    }
    return E_FAIL(C, FK_ERR_ARG, "chat template line %d: iterating over %s", C->line, kind_a(x));
}

static val filter(ctx *C, const char *f, val x, const val *a, const str *kw, int na) {
    val a0 = arg(a, kw, na, 0, NULL);
    if (!strcmp(f, "trim")) {
        if (x.k != V_STR) x = to_str(C, x);
        return x.k == V_STR ? strip(x, a0, true, true) : UNDEF;
    }
    if (!strcmp(f, "length") || !strcmp(f, "count")) {
        int64_t n = x.k == V_UNDEF ? 0 : seq_len(x);
        if (n < 0) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: the length of %s", C->line, kind_a(x));
        return vint(n);
    }
    if (!strcmp(f, "upper") || !strcmp(f, "lower") || !strcmp(f, "capitalize") || !strcmp(f, "title")) {
        if (x.k != V_STR) x = to_str(C, x);
        return x.k == V_STR ? case_map(C, x, f[0] == 'u' ? 0 : f[0] == 'l' ? 1 : f[0] == 'c' ? 2 : 3) : UNDEF;
    }
    if (!strcmp(f, "string")) return to_str(C, x);
    if (!strcmp(f, "int")) {
        if (x.k == V_INT) return x;
        if (x.k == V_FLOAT) return vint((int64_t)x.u.f);
        if (x.k == V_BOOL) return vint(x.u.b);
        if (x.k == V_STR) { char b[32]; snprintf(b, sizeof b, "%.*s", (int)(x.u.s.n < 31 ? x.u.s.n : 31), x.u.s.s); char *e; long long v = strtoll(b, &e, 10); return vint(*e ? 0 : v); }
        return vint(0);
    }
    if (!strcmp(f, "tojson")) {
        val ind = arg(a, kw, na, 0, "indent");
        sbuf b = {C, NULL, 0, 0};
        if (!sb_put(&b, "", 0) || !to_json(&b, x, ind.k == V_INT ? (int)(ind.u.i > 40 ? 40 : ind.u.i) : 0, 0)) return UNDEF;
        return sb_val(&b);
    }
    if (!strcmp(f, "join")) {
        val l = list_of(C, x);
        if (l.k != V_LIST) return UNDEF;
        sbuf b = {C, NULL, 0, 0};
        if (!sb_put(&b, "", 0)) return UNDEF;
        for (int i = 0; i < l.u.l->n; i++) {
            if (i && a0.k == V_STR && !sb_put(&b, a0.u.s.s, a0.u.s.n)) return UNDEF;
            if (!repr(&b, l.u.l->v[i], false)) return UNDEF;
        }
        return sb_val(&b);
    }
    if (!strcmp(f, "first") || !strcmp(f, "last")) {
        val l = list_of(C, x);
        if (l.k != V_LIST) return UNDEF;
        return l.u.l->n ? l.u.l->v[f[0] == 'f' ? 0 : l.u.l->n - 1] : UNDEF;
    }
    if (!strcmp(f, "default") || !strcmp(f, "d")) {
        val b = arg(a, kw, na, 1, "boolean");
        bool use = x.k == V_UNDEF || (truthy(b) && !truthy(x));
        return use ? (a0.k == V_UNDEF ? vstr("", 0) : a0) : x;
    }
    if (!strcmp(f, "replace")) {
        if (x.k != V_STR) x = to_str(C, x);
        return x.k == V_STR ? replace(C, x, a0, arg(a, kw, na, 1, NULL)) : UNDEF;
    }
    if (!strcmp(f, "list")) return list_of(C, x);
    if (!strcmp(f, "reverse")) {
        if (x.k == V_STR) return slice(C, x, UNDEF, UNDEF, vint(-1));
        val l = list_of(C, x);
        return l.k == V_LIST ? slice(C, l, UNDEF, UNDEF, vint(-1)) : UNDEF;
    }
    if (!strcmp(f, "items")) {
        if (x.k != V_DICT) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: items of %s", C->line, kind_a(x));
        return dict_items(C, x.u.d, 0);
    }
    if (!strcmp(f, "dictsort")) {
        if (x.k != V_DICT) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: dictsort of %s", C->line, kind_a(x));
        val it = dict_items(C, x.u.d, 0);
        if (it.k != V_LIST) return UNDEF;
        vlist *l = it.u.l;
        for (int i = 1; i < l->n; i++)  // insertion sort by key (strings case-insensitive, as Jinja's default)
            for (int j = i; j > 0; j--) {
                val pk = l->v[j - 1].u.l->v[0], qk = l->v[j].u.l->v[0];
                int c = 0;
                if (pk.k == V_STR && qk.k == V_STR) {
                    str p = pk.u.s, q = qk.u.s;
                    size_t m = p.n < q.n ? p.n : q.n;
                    for (size_t k = 0; k < m && !c; k++) c = tolower((unsigned char)p.s[k]) - tolower((unsigned char)q.s[k]);
                    if (!c) c = (p.n > q.n) - (p.n < q.n);
                } else {
                    bool ok;
                    c = cmp_num(pk, qk, &ok);
                    if (!ok) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: dictsort over keys of mixed kinds", C->line);
                }
                if (c <= 0) break;
                val t = l->v[j]; l->v[j] = l->v[j - 1]; l->v[j - 1] = t;
            }
        return it;
    }
    if (!strcmp(f, "selectattr") || !strcmp(f, "rejectattr") || !strcmp(f, "map")) {
        if (x.k == V_UNDEF || x.k == V_NONE) x = (val){V_LIST, {.l = new_list(C, 1)}};  // Jinja skips an empty or None sequence
        if (!x.u.l) return UNDEF;
        val l = list_of(C, x);
        if (l.k != V_LIST) return UNDEF;
        vlist *r = new_list(C, l.u.l->n + 1);
        if (!r) return UNDEF;
        if (f[0] == 'm') {
            val at = arg(a, kw, na, 0, "attribute");
            if (at.k != V_STR || (kw && na && !kw[0].n))
                return E_FAIL(C, FK_ERR_UNSUPPORTED, "chat template line %d: map() is supported with attribute= only", C->line);
            for (int i = 0; i < l.u.l->n; i++) {
                val e = l.u.l->v[i];
                if (!list_push(C, r, e.k == V_DICT ? dict_get(e.u.d, at.u.s) : UNDEF)) return UNDEF;
            }
        } else {
            if (a0.k != V_STR) return E_FAIL(C, FK_ERR_ARG, "chat template line %d: %s() needs an attribute name", C->line, f);
            val tn = arg(a, kw, na, 1, NULL);
            char tname[64] = "";
            if (tn.k == V_STR) snprintf(tname, sizeof tname, "%.*s", (int)(tn.u.s.n < 63 ? tn.u.s.n : 63), tn.u.s.s);
            int rest = na > 2 ? na - 2 : 0;
            for (int i = 0; i < l.u.l->n; i++) {
                val e = l.u.l->v[i], v = e.k == V_DICT ? dict_get(e.u.d, a0.u.s) : UNDEF;
                bool ok = true, pass = tname[0] ? test(C, tname, v, a + 2, kw ? kw + 2 : NULL, rest, &ok) : truthy(v);
                if (!ok) return UNDEF;
                if (pass == (f[0] == 's') && !list_push(C, r, e)) return UNDEF;
            }
        }
        val v = {V_LIST, {.l = r}};
        return v;
    }
    return E_FAIL(C, FK_ERR_UNSUPPORTED, "chat template line %d: the filter '%s' is not supported", C->line, f);
}

static bool eval_args(ctx *C, const node *n, val *out) {
    for (int i = 0; i < n->args.n; i++) {
        out[i] = eval(C, n->args.v[i]);
        if (C->st != FK_OK) return false;
    }
    return true;
}

static void zname(char *b, size_t n, str s) { snprintf(b, n, "%.*s", (int)(s.n < n - 1 ? s.n : n - 1), s.s); }

static val eval(ctx *C, const node *n) {
    if (C->st != FK_OK) return UNDEF;
    C->line = n->line;
    val a, b;
    val args[64];
    char nm[64];
    switch (n->k) {
    case N_LIT: return n->lit;
    case N_NAME: return lookup(C, n->name);
    case N_ATTR:
        a = eval(C, n->a);
        if (C->st != FK_OK) return UNDEF;
        C->line = n->line;
        if (a.k == V_DICT) {
            val v = dict_get(a.u.d, n->name);
            if (v.k != V_UNDEF) return v;
            zname(nm, sizeof nm, n->name);
            if (!a.u.d->ns && (!strcmp(nm, "get") || !strcmp(nm, "items") || !strcmp(nm, "keys") || !strcmp(nm, "values"))) goto method;
            return UNDEF;
        }
        if (a.k == V_STR) { zname(nm, sizeof nm, n->name); goto method; }
        if (a.k == V_UNDEF || a.k == V_NONE) {
            zname(nm, sizeof nm, n->name);
            return E_FAIL(C, FK_ERR_ARG, "chat template line %d: '%s' of an %s value", n->line, nm, a.k == V_NONE ? "None" : "undefined");
        }
        return UNDEF;
    method: {
        val *self = aalloc(C->a, sizeof *self);
        char *name = aalloc(C->a, strlen(nm) + 1);
        if (!self || !name) return E_FAIL(C, FK_ERR_NOMEM, "out of memory");
        *self = a;
        strcpy(name, nm);
        val f = {V_FUNC, {.fn = {F_METHOD, self, name}}};
        return f;
    }
    case N_ITEM:
        a = eval(C, n->a);
        b = eval(C, n->b);
        C->line = n->line;
        return C->st == FK_OK ? item(C, a, b) : UNDEF;
    case N_SLICE: {
        a = eval(C, n->a);
        val lo = n->b ? eval(C, n->b) : UNDEF, hi = n->c ? eval(C, n->c) : UNDEF, st = n->args.n ? eval(C, n->args.v[0]) : UNDEF;
        C->line = n->line;
        return C->st == FK_OK ? slice(C, a, lo, hi, st) : UNDEF;
    }
    case N_CALL:
        a = eval(C, n->a);
        if (C->st != FK_OK || !eval_args(C, n, args)) return UNDEF;
        C->line = n->line;
        return call(C, a, args, n->kw, n->args.n);
    case N_FILTER:
        a = eval(C, n->a);
        if (C->st != FK_OK || !eval_args(C, n, args)) return UNDEF;
        C->line = n->line;
        zname(nm, sizeof nm, n->name);
        return filter(C, nm, a, args, n->kw, n->args.n);
    case N_TEST: {
        a = eval(C, n->a);
        if (C->st != FK_OK || !eval_args(C, n, args)) return UNDEF;
        C->line = n->line;
        zname(nm, sizeof nm, n->name);
        bool ok, r = test(C, nm, a, args, n->kw, n->args.n, &ok);
        return ok ? vbool(r != n->neg) : UNDEF;
    }
    case N_NOT: a = eval(C, n->a); return vbool(!truthy(a));
    case N_NEG:
        a = eval(C, n->a);
        if (a.k == V_INT) return vint(-a.u.i);
        if (a.k == V_FLOAT) return vfloat(-a.u.f);
        return C->st == FK_OK ? E_FAIL(C, FK_ERR_ARG, "chat template line %d: negating %s", n->line, kind_a(a)) : UNDEF;
    case N_AND: a = eval(C, n->a); return truthy(a) ? eval(C, n->b) : a;
    case N_OR: a = eval(C, n->a); return truthy(a) ? a : eval(C, n->b);
    case N_COND: a = eval(C, n->b); return truthy(a) ? eval(C, n->a) : n->c ? eval(C, n->c) : UNDEF;
    case N_BIN:
        a = eval(C, n->a);
        b = eval(C, n->b);
        C->line = n->line;
        return C->st == FK_OK ? binop(C, n->name, a, b) : UNDEF;
    case N_LIST: case N_DICT: {
        if (n->k == N_LIST) {
            vlist *l = new_list(C, n->args.n + 1);
            for (int i = 0; l && i < n->args.n; i++) if (!list_push(C, l, eval(C, n->args.v[i]))) return UNDEF;
            if (!l) return UNDEF;
            val v = {V_LIST, {.l = l}};
            return v;
        }
        vdict *d = new_dict(C);
        for (int i = 0; d && i + 1 < n->args.n; i += 2) {
            val k = eval(C, n->args.v[i]);
            if (k.k == V_INT) k = vstr(int_key(C, k.u.i).s, int_key(C, k.u.i).n);
            if (k.k != V_STR) return C->st == FK_OK ? E_FAIL(C, FK_ERR_UNSUPPORTED, "chat template line %d: dict keys must be strings", n->line) : UNDEF;
            if (!dict_set(C, d, k.u.s, eval(C, n->args.v[i + 1]))) return UNDEF;
        }
        if (!d) return UNDEF;
        val v = {V_DICT, {.d = d}};
        return v;
    }
    default: return E_FAIL(C, FK_ERR_ARG, "chat template line %d: not an expression", n->line);
    }
}


static val loop_info(ctx *C, const vlist *l, int64_t i) {
    vdict *d = new_dict(C);
    if (!d) return UNDEF;
    int64_t n = l->n;
    struct { const char *k; val v; } f[] = {
        {"index0", vint(i)}, {"index", vint(i + 1)}, {"revindex0", vint(n - 1 - i)}, {"revindex", vint(n - i)},
        {"first", vbool(i == 0)}, {"last", vbool(i == n - 1)}, {"length", vint(n)},
        {"previtem", i > 0 ? l->v[i - 1] : UNDEF}, {"nextitem", i + 1 < n ? l->v[i + 1] : UNDEF},
    };
    for (size_t k = 0; k < sizeof f / sizeof f[0]; k++) if (!dict_set(C, d, (str){f[k].k, strlen(f[k].k)}, f[k].v)) return UNDEF;
    val v = {V_DICT, {.d = d}};
    return v;
}

static int exec_for(ctx *C, const node *n) {
    val it = eval(C, n->a);
    if (C->st != FK_OK) return CTL_NONE;
    if (it.k == V_NONE) { C->st = fk_error(FK_ERR_ARG, "chat template line %d: iterating over None", n->line); return CTL_NONE; }
    if (it.k == V_UNDEF) it = (val){V_LIST, {.l = new_list(C, 1)}};  // Jinja: an undefined iterable is empty
    val l = list_of(C, it);
    if (C->st != FK_OK || !l.u.l) return CTL_NONE;
    // the loop filter ("for x in xs if cond") runs before loop.* is computed
    vlist *items = l.u.l;
    frame f = {NULL, 0, 0, C->top};
    if (n->b) {
        vlist *kept = new_list(C, items->n + 1);
        if (!kept) return CTL_NONE;
        C->top = &f;
        for (int i = 0; i < items->n && C->st == FK_OK; i++) {
            f.n = 0;
            if (!bind(C, &f, n->name, items->v[i])) break;
            if (truthy(eval(C, n->b))) list_push(C, kept, items->v[i]);
        }
        C->top = f.up;
        if (C->st != FK_OK) return CTL_NONE;
        items = kept;
    }
    if (items->n == 0) return exec(C, &n->orelse);
    for (int i = 0; i < items->n && C->st == FK_OK; i++) {
        if (++C->iterations > 1000000) { C->st = fk_error(FK_ERR_ARG, "chat template line %d: more than 10^6 loop iterations", n->line); break; }
        f.n = 0;  // a fresh scope per iteration ({% set %} inside a loop does not outlive it)
        C->top = &f;
        val x = items->v[i];
        bool ok;
        if (n->name2.n) {  // for a, b in pairs
            if (x.k != V_LIST || x.u.l->n != 2) { C->top = f.up; C->st = fk_error(FK_ERR_ARG, "chat template line %d: cannot unpack %s into two names", n->line, kind_a(x)); return CTL_NONE; }
            ok = bind(C, &f, n->name, x.u.l->v[0]) && bind(C, &f, n->name2, x.u.l->v[1]);
        } else ok = bind(C, &f, n->name, x);
        ok = ok && bind(C, &f, (str){"loop", 4}, loop_info(C, items, i));
        int ctl = ok ? exec(C, &n->body) : CTL_NONE;
        C->top = f.up;
        if (ctl == CTL_BREAK) break;
    }
    return CTL_NONE;
}

static int exec(ctx *C, const nlist *body) {
    for (int i = 0; i < body->n && C->st == FK_OK; i++) {
        const node *n = body->v[i];
        C->line = n->line;
        switch (n->k) {
        case N_TEXT: out_put(C, n->lit.u.s.s, n->lit.u.s.n); break;
        case N_OUT: {
            val v = eval(C, n->a);
            if (C->st != FK_OK) break;
            if (v.k == V_STR) out_put(C, v.u.s.s, v.u.s.n);
            else {
                sbuf b = {C, NULL, 0, 0};
                if (repr(&b, v, false) && b.n) out_put(C, b.s, b.n);
            }
            break;
        }
        case N_IF:
            for (int c = 0; c < n->args.n && C->st == FK_OK; c++) {
                if (truthy(eval(C, n->args.v[c]))) {
                    if (C->st != FK_OK) break;
                    int ctl = exec(C, &n->bodies[c]);
                    if (ctl != CTL_NONE) return ctl;
                    goto next;
                }
            }
            if (C->st == FK_OK) { int ctl = exec(C, &n->orelse); if (ctl != CTL_NONE) return ctl; }
        next:
            break;
        case N_FOR: exec_for(C, n); break;
        case N_SET: {
            val v = eval(C, n->a);
            if (C->st != FK_OK) break;
            if (n->name2.n) {
                val ns = lookup(C, n->name);
                char a[64];
                zname(a, sizeof a, n->name);
                if (ns.k != V_DICT || !ns.u.d->ns) { C->st = fk_error(FK_ERR_ARG, "chat template line %d: '%s' is not a namespace()", n->line, a); break; }
                dict_set(C, ns.u.d, n->name2, v);
            } else bind(C, C->top, n->name, v);
            break;
        }
        case N_SETBLOCK: {
            char *saved = C->out;
            size_t len = C->len, cap = C->cap;
            C->out = NULL, C->len = 0, C->cap = 0;
            exec(C, &n->body);
            char *got = C->out;
            size_t glen = C->len;
            C->out = saved, C->len = len, C->cap = cap;
            if (C->st == FK_OK) {
                char *p = aalloc(C->a, glen + 1);
                if (!p) C->st = fk_error(FK_ERR_NOMEM, "out of memory");
                else { if (glen) memcpy(p, got, glen); p[glen] = 0; bind(C, C->top, n->name, vstr(p, glen)); }
            }
            free(got);
            break;
        }
        case N_MACRO: {
            val f = {V_FUNC, {.fn = {F_MACRO, NULL, NULL, n}}};
            bind(C, C->top, n->name, f);
            break;
        }
        case N_BREAK: return CTL_BREAK;
        case N_CONTINUE: return CTL_CONTINUE;
        default: C->st = fk_error(FK_ERR_ARG, "chat template line %d: not a statement", n->line);
        }
    }
    return CTL_NONE;
}

fk_status fk_chat_render(const char *tmpl, const fk_chat_msg *msgs, int n, const fk_chat_opts *o, char **out) {
    *out = NULL;
    if (!tmpl) return fk_error(FK_ERR_ARG, "chat: no template");
    size_t len = strlen(tmpl);
    if (len > FK_CHAT_MAX_TEMPLATE) return fk_error(FK_ERR_ARG, "chat template: %zu bytes, more than the %d allowed", len, FK_CHAT_MAX_TEMPLATE);
    if (n < 0 || n > 10000) return fk_error(FK_ERR_ARG, "chat: %d messages (0..10000 allowed)", n);
    arena A = {0};
    lexer L = {&A, tmpl, len, NULL, 0, 0, FK_OK};
    fk_status st = lex(&L) ? FK_OK : L.st;
    parser P = {&A, L.t, 0, 0, FK_OK};
    nlist root = {0};
    if (st == FK_OK) {
        const char *stop;
        if (!body(&P, &root, NULL, &stop)) st = P.st;
    }
    ctx C = {&A, NULL, NULL, NULL, 0, 0, 0, 0, 0, FK_OK, 0};
    frame g = {0};
    C.top = C.global = &g;
    if (st == FK_OK) {
        vlist *ml = new_list(&C, n + 1);
        for (int i = 0; ml && i < n && C.st == FK_OK; i++) {
            vdict *d = new_dict(&C);
            if (!d) break;
            const char *r = msgs[i].role ? msgs[i].role : "", *c = msgs[i].content ? msgs[i].content : "";
            dict_set(&C, d, (str){"role", 4}, vstr(r, strlen(r)));
            dict_set(&C, d, (str){"content", 7}, vstr(c, strlen(c)));
            val v = {V_DICT, {.d = d}};
            list_push(&C, ml, v);
        }
        val mv = {V_LIST, {.l = ml}};
        const char *bos = o && o->bos_token ? o->bos_token : "", *eos = o && o->eos_token ? o->eos_token : "";
        if (C.st == FK_OK && ml) {
            bind(&C, &g, (str){"messages", 8}, mv);
            bind(&C, &g, (str){"add_generation_prompt", 21}, vbool(o && o->add_generation_prompt));
            bind(&C, &g, (str){"bos_token", 9}, vstr(bos, strlen(bos)));
            bind(&C, &g, (str){"eos_token", 9}, vstr(eos, strlen(eos)));
            bind(&C, &g, (str){"tools", 5}, NONE);  // as transformers passes them when there are none
            bind(&C, &g, (str){"documents", 9}, NONE);
            for (int i = 0; o && i < o->n_vars; i++)
                if (o->vars[i].name && o->vars[i].value)
                    bind(&C, &g, (str){o->vars[i].name, strlen(o->vars[i].name)}, vstr(o->vars[i].value, strlen(o->vars[i].value)));
        }
        if (C.st == FK_OK) out_put(&C, "", 0);
        if (C.st == FK_OK) exec(&C, &root);
        st = C.st;
        if (st == FK_OK && A.failed) st = fk_error(FK_ERR_NOMEM, "out of memory rendering a chat template");
    }
    free(L.t);
    arena_free(&A);
    if (st != FK_OK) { free(C.out); return st; }
    *out = C.out;
    return FK_OK;
}

// ------------------------------------------------------------------ finding a model's template

static fk_status dup_out(const char *s, size_t n, char **tmpl) {
    if (n > FK_CHAT_MAX_TEMPLATE) return fk_error(FK_ERR_FORMAT, "chat template: %zu bytes, more than the %d allowed", n, FK_CHAT_MAX_TEMPLATE);
    *tmpl = malloc(n + 1);
    if (!*tmpl) return fk_error(FK_ERR_NOMEM, "out of memory");
    memcpy(*tmpl, s, n);
    (*tmpl)[n] = 0;
    return FK_OK;
}

// A template file (or a JSON file holding one) read whole, its size bounded before it is read:
// a template of at most FK_CHAT_MAX_TEMPLATE, a JSON file of at most 64 MiB.
static fk_status read_bounded(const char *path, size_t max, char **text, size_t *n) {
    struct stat sb;
    if (stat(path, &sb) == 0 && sb.st_size > (off_t)max)
        return fk_error(FK_ERR_FORMAT, "%s: %lld bytes, more than the %zu a chat template's file may have", path, (long long)sb.st_size, max);
    return fk_read_file(path, text, n);  // refuses what is not a regular file, naming it
}

// tokenizer_config.json's (or chat_template.json's) "chat_template": a string, or a list of
// {"name", "template"} ("default" taken).
static fk_status json_template(const char *path, char **tmpl) {
    char *text = NULL;
    size_t n = 0;
    FK_TRY(read_bounded(path, (size_t)64 << 20, &text, &n));
    cJSON *root = cJSON_ParseWithLength(text, n);
    free(text);
    if (!root) return fk_error(FK_ERR_FORMAT, "%s: not valid JSON", path);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
    fk_status st = FK_OK;
    if (cJSON_IsString(t)) st = dup_out(t->valuestring, strlen(t->valuestring), tmpl);
    else if (cJSON_IsArray(t)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, t) {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name"), *tt = cJSON_GetObjectItemCaseSensitive(it, "template");
            if (cJSON_IsString(nm) && cJSON_IsString(tt) && strcmp(nm->valuestring, "default") == 0) {
                st = dup_out(tt->valuestring, strlen(tt->valuestring), tmpl);
                break;
            }
        }
        if (st == FK_OK && !*tmpl) st = fk_error(FK_ERR_FORMAT, "%s: \"chat_template\" is a list without a \"default\" entry", path);
    } else if (t && !cJSON_IsNull(t)) st = fk_error(FK_ERR_FORMAT, "%s: \"chat_template\" must be a string or a list of {name, template}", path);
    cJSON_Delete(root);
    return st;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

fk_status fk_chat_template_find(const char *model_path, const char *tmpl_path, char **tmpl, char **where) {
    *tmpl = NULL;
    if (where) *where = NULL;
    fk_status st = FK_OK;
    const char *from = NULL;
    char *joined = NULL;
    if (tmpl_path) {
        size_t n = 0;
        FK_TRY(read_bounded(tmpl_path, FK_CHAT_MAX_TEMPLATE, tmpl, &n));
        from = tmpl_path;
    } else if (model_path && ends_with(model_path, ".gguf")) {
        fk_gguf g;
        FK_TRY(fk_gguf_open(model_path, &g));
        const fk_gguf_kv *kv = fk_gguf_find(&g, "tokenizer.chat_template");
        if (kv) {
            fk_gguf_str s;
            st = fk_gguf_get_str(&g, "tokenizer.chat_template", &s);
            if (st == FK_OK) st = dup_out(s.s, s.n, tmpl);
            from = model_path;
        }
        fk_gguf_close(&g);
    } else if (model_path) {
        char *dir = strdup(model_path);
        if (!dir) return fk_error(FK_ERR_NOMEM, "out of memory");
        if (ends_with(dir, ".json")) { char *sl = strrchr(dir, '/'); if (sl) *sl = 0; else strcpy(dir, "."); }
        static const char *const files[] = {"chat_template.jinja", "tokenizer_config.json", "chat_template.json"};
        for (size_t i = 0; i < 3 && st == FK_OK && !*tmpl; i++) {
            free(joined);
            joined = fk_path_join(dir, files[i]);
            if (!joined) { st = fk_error(FK_ERR_NOMEM, "out of memory"); break; }
            if (!fk_path_exists(joined)) continue;
            if (i == 0) {
                size_t n = 0;
                st = read_bounded(joined, FK_CHAT_MAX_TEMPLATE, tmpl, &n);
            } else st = json_template(joined, tmpl);
            if (*tmpl) from = joined;
        }
        free(dir);
    }
    if (st == FK_OK && *tmpl && where && !(*where = strdup(from))) st = fk_error(FK_ERR_NOMEM, "out of memory");
    free(joined);
    if (st != FK_OK) { free(*tmpl); *tmpl = NULL; }
    return st;
}
