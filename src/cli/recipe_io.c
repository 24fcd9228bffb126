// Recipe files read (libyaml, cJSON) and written (block YAML), and SHA-256 of inputs (libcrypto).
#include "recipe.h"

#include <dirent.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <yaml.h>

#include "fusekit/fusekit.h"

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    for (size_t r; buf && (r = fread(buf + len, 1, cap - len, f)) > 0;) {
        len += r;
        if (len == cap) {
            char *b = realloc(buf, 2 * cap + 1);
            if (!b) { free(buf); buf = NULL; break; }
            buf = b;
            cap *= 2;
        }
    }
    bool bad = ferror(f);
    fclose(f);
    if (!buf || bad) { free(buf); return NULL; }
    buf[len] = 0;
    *n = len;
    return buf;
}

// ---- YAML (one document) into the tree

static bool is_plain(const yaml_node_t *nd) { return nd->data.scalar.style == YAML_PLAIN_SCALAR_STYLE; }

static cJSON *yaml_scalar(const yaml_node_t *nd) {
    const char *s = (const char *)nd->data.scalar.value;
    if (!is_plain(nd)) return cJSON_CreateString(s);
    if (!*s || strcmp(s, "~") == 0 || strcasecmp(s, "null") == 0) return cJSON_CreateNull();
    if (strcasecmp(s, "true") == 0) return cJSON_CreateTrue();
    if (strcasecmp(s, "false") == 0) return cJSON_CreateFalse();
    return cJSON_CreateRaw(s);
}

static void at(char *err, size_t n, const char *path, yaml_mark_t m, const char *what) {
    snprintf(err, n, "%s:%zu:%zu: %s", path, m.line + 1, m.column + 1, what);
}

// The node as a tree (depth-limited: aliases are resolved by libyaml, a cycle is refused).
static cJSON *yaml_tree(yaml_document_t *doc, yaml_node_t *nd, int depth, const char *path, char *err, size_t n_err) {
    if (depth > 64) { at(err, n_err, path, nd->start_mark, "nested too deeply (or a recursive alias)"); return NULL; }
    if (nd->type == YAML_SCALAR_NODE) return yaml_scalar(nd);
    bool map = nd->type == YAML_MAPPING_NODE;
    cJSON *out = map ? cJSON_CreateObject() : cJSON_CreateArray();
    if (map) {
        for (yaml_node_pair_t *p = nd->data.mapping.pairs.start; out && p < nd->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key), *v = yaml_document_get_node(doc, p->value);
            if (k->type != YAML_SCALAR_NODE) { at(err, n_err, path, k->start_mark, "a key must be a plain name"); cJSON_Delete(out); return NULL; }
            const char *name = (const char *)k->data.scalar.value;
            if (cJSON_GetObjectItemCaseSensitive(out, name)) {
                char w[160];
                snprintf(w, sizeof w, "key '%.100s' repeated", name);
                at(err, n_err, path, k->start_mark, w);
                cJSON_Delete(out);
                return NULL;
            }
            cJSON *c = yaml_tree(doc, v, depth + 1, path, err, n_err);
            if (!c) { cJSON_Delete(out); return NULL; }
            cJSON_AddItemToObject(out, name, c);
        }
    } else {
        for (yaml_node_item_t *i = nd->data.sequence.items.start; out && i < nd->data.sequence.items.top; i++) {
            cJSON *c = yaml_tree(doc, yaml_document_get_node(doc, *i), depth + 1, path, err, n_err);
            if (!c) { cJSON_Delete(out); return NULL; }
            cJSON_AddItemToArray(out, c);
        }
    }
    return out;
}

static cJSON *read_yaml(const char *path, const char *text, size_t n, char *err, size_t n_err) {
    yaml_parser_t p;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&p)) { snprintf(err, n_err, "%s: out of memory", path); return NULL; }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, n);
    cJSON *out = NULL;
    if (!yaml_parser_load(&p, &doc)) {
        char w[256];
        snprintf(w, sizeof w, "%s%s%s", p.problem ? p.problem : "not YAML", p.context ? " " : "", p.context ? p.context : "");
        at(err, n_err, path, p.problem_mark, w);
    } else {
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (!root) snprintf(err, n_err, "%s: empty recipe", path);
        else out = yaml_tree(&doc, root, 0, path, err, n_err);
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&p);
    return out;
}

// ---- JSON into the same tree: numbers become raw items of their shortest text

static void json_numbers_raw(cJSON *v) {
    for (cJSON *c = v->child, *next; c; c = next) {
        next = c->next;  // (c is freed when replaced)
        if (cJSON_IsNumber(c)) {
            char t[40];
            double x = c->valuedouble;
            bool whole = x == (double)(int64_t)x && x > -1e15 && x < 1e15;  // 2e3 -> "2000": integer options read it
            for (int p = whole ? 18 : 1; p <= 17; p++) {
                snprintf(t, sizeof t, "%.*g", p, c->valuedouble);
                if (strtod(t, NULL) == c->valuedouble) break;
            }
            if (whole) snprintf(t, sizeof t, "%lld", (long long)x);
            cJSON *raw = cJSON_CreateRaw(t);
            if (raw && c->string) raw->string = strdup(c->string);  // (an object's key: not carried over by cJSON)
            cJSON_ReplaceItemViaPointer(v, c, raw);
        } else json_numbers_raw(c);
    }
}

static cJSON *read_json(const char *path, const char *text, char *err, size_t n_err) {
    const char *end = NULL;
    cJSON *out = cJSON_ParseWithOpts(text, &end, true);
    if (!out) {
        size_t line = 1, col = 1;
        for (const char *c = text; end && c < end; c++) {
            if (*c == '\n') { line++; col = 1; } else col++;
        }
        snprintf(err, n_err, "%s:%zu:%zu: not valid JSON", path, line, col);
        return NULL;
    }
    // a JSON number at the top (no parent to replace it in) is no recipe anyway
    json_numbers_raw(out);
    return out;
}

cJSON *recipe_read(const char *path, char *err, size_t n_err) {
    size_t n = 0;
    char *text = read_all(path, &n);
    if (!text) { snprintf(err, n_err, "%s: cannot read the recipe", path); return NULL; }
    size_t len = strlen(path);
    cJSON *out = len >= 5 && strcasecmp(path + len - 5, ".json") == 0 ? read_json(path, text, err, n_err) : read_yaml(path, text, n, err, n_err);
    free(text);
    return out;
}

const char *recipe_scalar_text(const cJSON *v, char *buf, size_t n) {
    if (cJSON_IsString(v) || cJSON_IsRaw(v)) return v->valuestring;
    if (cJSON_IsBool(v)) { snprintf(buf, n, "%s", cJSON_IsTrue(v) ? "true" : "false"); return buf; }
    return NULL;
}

// ---- The tree as block YAML

static void write_scalar(FILE *f, const cJSON *v) {
    if (cJSON_IsRaw(v)) { fputs(v->valuestring, f); return; }
    if (cJSON_IsBool(v)) { fputs(cJSON_IsTrue(v) ? "true" : "false", f); return; }
    if (cJSON_IsNull(v)) { fputs("null", f); return; }
    char *s = cJSON_PrintUnformatted(v);  // a JSON string is a YAML double-quoted scalar
    if (s) fputs(s, f);
    free(s);
}

static void write_key(FILE *f, const char *k) {
    bool plain = *k && strspn(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == strlen(k) && *k != '-';
    if (plain) { fputs(k, f); return; }
    cJSON *s = cJSON_CreateString(k);
    write_scalar(f, s);
    cJSON_Delete(s);
}

static bool is_empty_container(const cJSON *v) { return (cJSON_IsObject(v) || cJSON_IsArray(v)) && !v->child; }

// The children of v at indent; the first one's indentation left out when inline (it follows
// a "- " already written).
static void write_block(FILE *f, const cJSON *v, int indent, bool inline_first) {
    for (const cJSON *c = v->child; c; c = c->next) {
        if (!(inline_first && c == v->child)) fprintf(f, "%*s", indent, "");
        if (cJSON_IsObject(v)) {
            write_key(f, c->string);
            fputc(':', f);
        } else fputc('-', f);
        if (is_empty_container(c)) fputs(cJSON_IsObject(c) ? " {}\n" : " []\n", f);
        else if (cJSON_IsArray(v) && cJSON_IsObject(c)) {  // "- key: ..." with the mapping's other keys under it
            fputc(' ', f);
            write_block(f, c, indent + 2, true);
        } else if (cJSON_IsObject(c) || cJSON_IsArray(c)) {
            fputc('\n', f);
            write_block(f, c, indent + 2, false);
        } else {
            fputc(' ', f);
            write_scalar(f, c);
            fputc('\n', f);
        }
    }
}

void recipe_write_yaml(FILE *f, const cJSON *v, int indent) { write_block(f, v, indent, false); }

// ---- SHA-256

static bool hash_file(const char *path, unsigned char md[32]) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    unsigned char buf[1 << 16];
    for (size_t r; ok && (r = fread(buf, 1, sizeof buf, f)) > 0;) ok = EVP_DigestUpdate(ctx, buf, r);
    ok = ok && !ferror(f) && EVP_DigestFinal_ex(ctx, md, NULL);
    EVP_MD_CTX_free(ctx);
    fclose(f);
    return ok;
}

static void to_hex(const unsigned char md[32], char hex[65]) {
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

// Every regular file below dir (rel: its path so far) into ctx as "rel\0hex\n", in name order.
static bool hash_tree(EVP_MD_CTX *ctx, const char *dir, const char *rel, int depth) {
    struct dirent **ents = NULL;
    int n = scandir(dir, &ents, NULL, by_name);
    if (n < 0 || depth > 32) { free(ents); return false; }
    bool ok = true;
    for (int i = 0; i < n; i++) {
        const char *name = ents[i]->d_name;
        if (ok && strcmp(name, ".") != 0 && strcmp(name, "..") != 0) {
            char *full = fk_path_join(dir, name), *r = *rel ? fk_path_join(rel, name) : strdup(name);
            struct stat st;
            ok = full && r && stat(full, &st) == 0;
            if (ok && S_ISDIR(st.st_mode)) ok = hash_tree(ctx, full, r, depth + 1);
            else if (ok && S_ISREG(st.st_mode)) {
                unsigned char md[32];
                char hex[66];
                ok = hash_file(full, md);
                to_hex(md, hex);
                hex[64] = '\n';
                ok = ok && EVP_DigestUpdate(ctx, r, strlen(r) + 1) && EVP_DigestUpdate(ctx, hex, 65);
            }
            free(full);
            free(r);
        }
        free(ents[i]);
    }
    free(ents);
    return ok;
}

bool recipe_sha256(const char *path, char hex[65]) {
    struct stat st;
    unsigned char md[32];
    if (stat(path, &st) != 0) return false;
    if (!S_ISDIR(st.st_mode)) {
        if (!hash_file(path, md)) return false;
    } else {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) && hash_tree(ctx, path, "", 0) && EVP_DigestFinal_ex(ctx, md, NULL);
        EVP_MD_CTX_free(ctx);
        if (!ok) return false;
    }
    to_hex(md, hex);
    return true;
}
