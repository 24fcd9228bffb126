// Multiple-choice probes scored by log-likelihood. A probes file is JSON lines, one item each:
//   {"domain":"arith","context":"37+48=","choices":["85\n","86\n","75\n","58\n"],"answer":0}
// ("domain" optional; at least two choices; "answer" an index into them; blank lines skipped).
//
// Scoring rule: a choice's score is the sum of the log-probabilities of the tokens of
// context+choice that cover the choice, each given all tokens before it. context+choice is
// encoded as one string (no BOS/EOS); the scored tokens are those from the first token whose
// byte span ends after the context (so a token the tokenizer merged across the boundary is
// scored, with the tokens before it as its context) to the end. No length normalisation:
// the choices of one item are meant to have similar lengths. When the string is longer than
// the model's context, the context is cut from the left. The prediction is the choice with
// the highest score (the first of equal ones).
#ifndef FUSEKIT_PROBES_H
#define FUSEKIT_PROBES_H

#include "fusekit/base.h"
#include "fusekit/model.h"
#include "fusekit/tokenizer.h"

#define FK_PROBES_MAX_CHOICES 16
#define FK_PROBES_MAX_DOMAINS 16

typedef struct {
    char name[32];
    int64_t items, correct;
} fk_probe_domain;

typedef struct {
    int64_t items, correct;
    double accuracy;                                 // correct / items (0 when no items)
    int n_domains;                                   // in order of first appearance; items without
    fk_probe_domain domain[FK_PROBES_MAX_DOMAINS];   // a domain (or past the 16th) count as ""/"other"
    // Per item (malloc'd; free with fk_probe_result_free): the predicted and the right choice,
    // and the scores of item i's choices at score[score_off[i] .. score_off[i+1]).
    int32_t *pred, *answer;
    int64_t *score_off;
    double *score;
} fk_probe_result;

// Scores up to max_items items (0: all) of a probes file with model m; tok encodes the text
// (NULL: raw bytes, vocabulary 256), after its BOS when it adds one. Malformed lines are
// errors naming the file and line.
fk_status fk_probes_eval(fk_model *m, const fk_tokenizer *tok, const char *jsonl_path, int64_t max_items, fk_probe_result *r);
void fk_probe_result_free(fk_probe_result *r);
// Adds r's counts into total: items, correct, accuracy, and the domains matched by name, a
// domain past the table's FK_PROBES_MAX_DOMAINS counted as "other" as fk_probes_eval counts it.
// The per-item arrays are not merged (a zeroed total keeps them NULL). Sums several files'
// results (eval --probes A B).
void fk_probe_result_add(fk_probe_result *total, const fk_probe_result *r);

#endif
