// Chat templates (the tok layer): the Jinja templates models ship for turning a conversation
// into a prompt (tokenizer_config.json's "chat_template", a chat_template.jinja file, GGUF's
// tokenizer.chat_template), rendered as transformers' apply_chat_template renders them.
//
// fusekit renders them with its own interpreter of the Jinja subset chat templates use: text,
// {{ expressions }}, {% if / elif / else %}, {% for x in ... [if ...] %} (and "for k, v in") with
// loop.index, index0, revindex, revindex0, first, last, length, previtem, nextitem, {% else %}
// on empty loops, {% break %} / {% continue %}, {% set %} (names, namespace attributes, and
// {% set x %}...{% endset %}), {% macro name(a, b=default) %} called with positional and
// keyword arguments, {% generation %}, {# comments #}, whitespace control ({%- -%}, {{- -}},
// {%+) and transformers' environment settings (trim_blocks, lstrip_blocks); literals (strings,
// integers, floats, true/false/none, lists, tuples held as lists, dicts with string or integer
// keys), arithmetic, ~, comparisons, in / not in, and / or / not, a if b else c, attribute and
// item access, slices; the tests defined, undefined, none, string, number, integer, float,
// boolean, true, false, mapping, iterable, sequence, callable, odd, even, divisibleby, eq / ==,
// ne / !=; the filters trim, length / count, upper, lower, capitalize, title, string, int,
// tojson (indent=), join, first, last, default / d, replace, list, reverse, items, dictsort,
// selectattr / rejectattr (with a test), map (attribute=); Python's string methods strip /
// lstrip / rstrip, split, startswith, endswith, replace, upper, lower, title, capitalize,
// find, count, format ({} and {N} fields); dict methods get, items, keys, values; the globals
// raise_exception (an error with its message), strftime_now (local time), range and namespace.
// Anything else (include, import, call blocks, other filters and methods) is an error naming the
// construct and the template's line, never a silently wrong prompt. Checked against
// transformers' own rendering: tests/test_chat.c, tools/ref/make_chat_golden.py.
#ifndef FUSEKIT_CHAT_H
#define FUSEKIT_CHAT_H

#include "fusekit/base.h"

typedef struct {
    const char *role;     // "system", "user", "assistant", ...
    const char *content;
} fk_chat_msg;

typedef struct {
    const char *name, *value;  // an extra string variable for the template (e.g. date_string)
} fk_chat_var;

typedef struct {
    bool add_generation_prompt;  // end with the assistant's header, ready for the reply
    const char *bos_token;       // the tokenizer's BOS and EOS as text ("" when NULL)
    const char *eos_token;
    const fk_chat_var *vars;     // further variables (may be NULL)
    int n_vars;
} fk_chat_opts;

// Limits: a template of at most 1 MiB, 10,000 messages, output of at most 64 MiB, nesting
// of at most 200 levels, 10^6 loop iterations and 10,000 macro calls (64 deep) in all.
#define FK_CHAT_MAX_TEMPLATE (1 << 20)
#define FK_CHAT_MAX_OUTPUT (64 << 20)

// Renders tmpl over msgs into *out (malloc'd, NUL-terminated). Errors: FK_ERR_FORMAT for a
// template fusekit cannot parse ("chat template line 3: ..."), FK_ERR_UNSUPPORTED for a
// construct outside the subset above, FK_ERR_ARG for raise_exception (its message) and for
// an operation on values of the wrong type.
fk_status fk_chat_render(const char *tmpl, const fk_chat_msg *msgs, int n, const fk_chat_opts *o, char **out);

// The chat template of a model: the file tmpl_path when given; else, for a .gguf, its
// tokenizer.chat_template; for a folder (or a tokenizer.json path's folder),
// chat_template.jinja, then tokenizer_config.json's "chat_template" (a string, or a list of
// {"name", "template"} of which "default" is taken), then chat_template.json. *tmpl is NULL
// (and FK_OK returned) when the model has none; *where (may be NULL) names where it was found.
fk_status fk_chat_template_find(const char *model_path, const char *tmpl_path, char **tmpl, char **where);

#endif
