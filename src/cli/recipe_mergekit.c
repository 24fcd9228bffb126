// mergekit's YAML merge configs as a one-step fusekit recipe: merge_method linear / ties /
// task_arithmetic / sce, models with their weight and density, base_model, parameters
// (normalize, lambda, int8_mask, weight/density defaults), dtype. A key with no fusekit
// meaning is refused by name rather than ignored.
#include "recipe.h"

#include <stdlib.h>
#include <string.h>

static bool fail(char *err, size_t n, const char *fmt, const char *a, const char *b) {
    snprintf(err, n, fmt, a, b);
    return false;
}

// Only the keys in allowed (space-separated) may appear in o; what names o in a message.
static bool only_keys(const cJSON *o, const char *allowed, const char *what, char *err, size_t n) {
    const cJSON *k;
    cJSON_ArrayForEach(k, o) {
        size_t len = strlen(k->string);
        const char *p = allowed;
        bool ok = false;
        for (; *p && !ok; p += strcspn(p, " "), p += strspn(p, " ")) ok = strcspn(p, " ") == len && strncmp(p, k->string, len) == 0;
        if (!ok) return fail(err, n, "mergekit key '%s' in %s has no fusekit merge equivalent", k->string, what);
    }
    return true;
}

// A parameter as one number's text (mergekit's per-layer gradients, lists, are refused).
static bool param_text(const cJSON *v, const char *name, const char **out, char *err, size_t n) {
    if (!v) return true;
    if (!cJSON_IsRaw(v)) return fail(err, n, "mergekit parameter '%s' must be one number here (%s)", name, cJSON_IsArray(v) || cJSON_IsObject(v) ? "per-layer gradients and filters are not supported by fusekit merge" : "got text");
    *out = v->valuestring;
    return true;
}

static const char *method_name(const char *m) {
    static const char *const map[][2] = {{"linear", "linear"}, {"ties", "ties"}, {"task_arithmetic", "task-arithmetic"}, {"sce", "sce"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(m, map[i][0]) == 0) return map[i][1];
    return NULL;
}

static const char *dtype_name(const char *d) {
    static const char *const map[][2] = {{"float32", "f32"}, {"float16", "f16"}, {"bfloat16", "bf16"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(d, map[i][0]) == 0) return map[i][1];
    return NULL;
}

// The models, weights and (one) density into m; the base model's own entry left out.
static bool add_models(const cJSON *cfg, const char *base, const char *w_def, const char *d_def, cJSON *m, char *err, size_t n) {
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(cfg, "models"), *e;
    if (!cJSON_IsArray(models) || !models->child) return fail(err, n, "mergekit config: %s%s", "'models' must be a list of {model: PATH, parameters: {...}}", "");
    cJSON *paths = cJSON_AddArrayToObject(m, "model"), *weights = cJSON_AddArrayToObject(m, "weight");
    const char *density = NULL;
    cJSON_ArrayForEach(e, models) {
        const cJSON *path = cJSON_GetObjectItemCaseSensitive(e, "model"), *p = cJSON_GetObjectItemCaseSensitive(e, "parameters");
        if (!cJSON_IsObject(e) || !(cJSON_IsString(path) || cJSON_IsRaw(path))) return fail(err, n, "mergekit config: %s%s", "each entry of 'models' needs model: PATH", "");
        if (!only_keys(e, "model parameters", "a models entry", err, n) || (p && !only_keys(p, "weight density", "a model's parameters", err, n))) return false;
        if (base && strcmp(base, path->valuestring) == 0) continue;  // the base: its task vector is zero
        const char *w = w_def, *d = d_def;
        if (!param_text(cJSON_GetObjectItemCaseSensitive(p, "weight"), "weight", &w, err, n) ||
            !param_text(cJSON_GetObjectItemCaseSensitive(p, "density"), "density", &d, err, n))
            return false;
        if (d && density && strtod(d, NULL) != strtod(density, NULL))
            return fail(err, n, "mergekit config: the models' densities differ (%s, %s); fusekit's ties takes one density for all", density, d);
        if (d) density = d;
        cJSON_AddItemToArray(paths, cJSON_CreateString(path->valuestring));
        cJSON_AddItemToArray(weights, cJSON_CreateRaw(w ? w : "1"));
    }
    if (density) cJSON_AddItemToObject(m, "density", cJSON_CreateRaw(density));
    return true;
}

cJSON *recipe_from_mergekit(const cJSON *cfg, char *err, size_t n) {
    if (!only_keys(cfg, "merge_method models base_model parameters dtype out_dtype", "the config", err, n)) return NULL;
    const cJSON *mm = cJSON_GetObjectItemCaseSensitive(cfg, "merge_method"), *base = cJSON_GetObjectItemCaseSensitive(cfg, "base_model");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(cfg, "parameters");
    const char *method = cJSON_IsRaw(mm) || cJSON_IsString(mm) ? method_name(mm->valuestring) : NULL;
    if (!method) {
        fail(err, n, "mergekit merge_method '%s' has no fusekit merge (linear, ties, task_arithmetic, sce)%s", mm && mm->valuestring ? mm->valuestring : "?", "");
        return NULL;
    }
    if (params && !only_keys(params, "normalize int8_mask lambda weight density select_topk", "parameters", err, n)) return NULL;
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "method", method);
    const char *base_path = cJSON_IsString(base) || cJSON_IsRaw(base) ? base->valuestring : NULL;
    if (base_path && strcmp(method, "linear") == 0) {
        cJSON_Delete(m);
        fail(err, n, "mergekit config: base_model is unused by merge_method linear (fusekit refuses it: %s%s)", "drop it or use task_arithmetic", "");
        return NULL;
    }
    const char *w_def = NULL, *d_def = NULL, *lambda = NULL, *topk = NULL;
    bool ok = param_text(cJSON_GetObjectItemCaseSensitive(params, "weight"), "weight", &w_def, err, n) &&
              param_text(cJSON_GetObjectItemCaseSensitive(params, "density"), "density", &d_def, err, n) &&
              param_text(cJSON_GetObjectItemCaseSensitive(params, "lambda"), "lambda", &lambda, err, n) &&
              param_text(cJSON_GetObjectItemCaseSensitive(params, "select_topk"), "select_topk", &topk, err, n) &&
              add_models(cfg, base_path, w_def, d_def, m, err, n);
    if (ok && base_path) cJSON_AddStringToObject(m, "base", base_path);
    if (ok && lambda) cJSON_AddItemToObject(m, "lambda", cJSON_CreateRaw(lambda));
    if (ok && topk) cJSON_AddItemToObject(m, "select-topk", cJSON_CreateRaw(topk));
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(params, "normalize");
    if (ok && norm && !cJSON_IsBool(norm)) ok = fail(err, n, "mergekit parameter 'normalize' must be true or false%s%s", "", "");
    if (ok && norm) cJSON_AddTrueToObject(m, cJSON_IsTrue(norm) ? "normalize" : "no-normalize");
    // int8_mask: mergekit's memory saving for its masks; the merge is the same without it
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(cfg, "dtype");
    if (!dt) dt = cJSON_GetObjectItemCaseSensitive(cfg, "out_dtype");
    const char *dtype = dt && dt->valuestring ? dtype_name(dt->valuestring) : NULL;
    if (ok && dt && !dtype) ok = fail(err, n, "mergekit dtype '%s' is not one fusekit writes (float32, float16, bfloat16)%s", dt->valuestring ? dt->valuestring : "?", "");
    if (ok && dtype) cJSON_AddStringToObject(m, "dtype", dtype);
    if (!ok) { cJSON_Delete(m); return NULL; }
    cJSON_AddStringToObject(m, "out", ".");
    cJSON *recipe = cJSON_CreateObject(), *steps = cJSON_AddArrayToObject(recipe, "steps"), *step = cJSON_CreateObject();
    cJSON_AddItemToObject(step, "merge", m);
    cJSON_AddItemToArray(steps, step);
    return recipe;
}
