// Recipe files (fusekit run): reading YAML (libyaml) or JSON (cJSON) into one tree, writing it
// back as YAML, and SHA-256 of the inputs (libcrypto).
#ifndef FK_CLI_RECIPE_H
#define FK_CLI_RECIPE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>

// The file as a cJSON tree: mappings are objects (keys in order; a repeated key refused), sequences
// arrays, scalars strings, but plain YAML scalars true/false (booleans), null/~/empty (null) and
// other plain scalars and JSON numbers, which are raw items holding their text as written (a JSON
// number: the shortest text that reads back as it). A file ending in .json is read by cJSON, any
// other by libyaml (one document). NULL on failure with err "FILE:LINE:COLUMN: what" (1-based).
cJSON *recipe_read(const char *path, char *err, size_t n_err);
// The text of a scalar item (string or raw), "true"/"false" for a boolean; NULL for others.
const char *recipe_scalar_text(const cJSON *v, char *buf, size_t n);
// Writes the tree as block YAML (strings double-quoted, raw items plain, keys plain when they
// are [A-Za-z0-9_.-]+), which recipe_read reads back into the same tree.
void recipe_write_yaml(FILE *f, const cJSON *v, int indent);
// Lowercase hex SHA-256 of a file, or of a folder (every regular file below it in name order:
// "relative path\0hex\n" lines hashed); false when it cannot be read.
bool recipe_sha256(const char *path, char hex[65]);
// A mergekit merge config (a tree with merge_method) as a recipe of one merge step writing "."
// (the output root itself); NULL with err naming the key that has no fusekit equivalent.
cJSON *recipe_from_mergekit(const cJSON *cfg, char *err, size_t n);

#endif
