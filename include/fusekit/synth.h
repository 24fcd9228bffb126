// The embedded synthetic corpus: four domains a small model can master one at a time and one
// model can learn together, each with train / valid / test splits and multiple-choice probes
// drawn from held-out material. Deterministic: the same seed and options give byte-identical
// files (no clock, no locale, fk_rng only).
//
//   arith    "37+48=85", "64-29=35", "9*7=63": operands 0..99 for + and - (no negative
//            results), 0..12 for *. Each problem belongs to one split (by a seeded hash).
//   facts    a fixed base of 150 invented people, each with a city, a profession, a pet and a
//            favourite colour, stated with several templates. For every (person, relation) one
//            template is kept for valid and another for test; train uses the rest and
//            multi-fact templates, every fact many times, in shuffled rounds.
//   grammar  "the keys to the old cabinet are on the table.": subject-verb number agreement
//            across prepositional-phrase attractors. Each sentence belongs to one split (hash).
//   records  "id=4821; name=Orla Venn; age=34; born=1990; city=Quessa;" with born = 2024 - age
//            and a fixed field order. Each record belongs to one split (hash).
//
// Layout of the output folder:
//   DIR/<domain>/train.txt, valid.txt, test.txt   plain ASCII, one item per line, '\n' ends
//   DIR/<domain>/probes.jsonl                     {"domain","context","choices","answer"} per line
//   DIR/mix/train.txt, valid.txt, test.txt        the domains' splits interleaved in blocks of
//                                                 whole lines (each domain once, equal shares)
//   DIR/manifest.json                             seed, sizes, domains, files (bytes, lines)
// A probe's choices are complete continuations of its context (arith: "85\n", facts:
// " Quessa.", grammar: " are on the table.", records: "1990;"), so no choice is a prefix of
// another; its answer is the index of the right one.
#ifndef FUSEKIT_SYNTH_H
#define FUSEKIT_SYNTH_H

#include "fusekit/base.h"

#define FK_SYNTH_N_DOMAINS 4
// "arith", "facts", "grammar", "records", in the order files are written.
extern const char *const fk_synth_domains[FK_SYNTH_N_DOMAINS];

typedef struct {
    uint64_t seed;
    int64_t bytes_per_domain;   // size of each domain's train split (default 120000)
    int64_t heldout_bytes;      // size of each valid and test split (0: bytes_per_domain / 10)
    int64_t probes_per_domain;  // multiple-choice items per domain (default 250; facts at most 600)
    int64_t mix_block_bytes;    // mix files: a block is whole lines of at least this many bytes (default 1024)
} fk_synth_opts;

typedef struct {
    int64_t files;        // files written, the manifest included
    int64_t bytes;        // bytes written in all of them
    int64_t train_bytes;  // sum of the domains' train splits
    int64_t probes;       // probe items over all domains
} fk_synth_stats;

void fk_synth_opts_default(fk_synth_opts *o);
// Writes the corpus into dir (created when missing; files are replaced atomically).
// Zero fields of o take their defaults; stats may be NULL.
fk_status fk_synth_write(const char *dir, const fk_synth_opts *o, fk_synth_stats *stats);

#endif
