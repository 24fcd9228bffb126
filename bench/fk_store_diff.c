// fk_store_diff A.fkd B.fkd: how far two stores of the same text are apart (e.g. one source
// extracted with fp32 and with bf16 products; bench/quant_extract.sh). Prints one JSON line:
// positions compared, the share whose top-1 id agrees, the mean and largest |ce_A - ce_B| of the
// true next token (nats), the mean cross-entropy of each (bits per token are ce / ln 2), and the
// mean over positions of KL(A || B) on A's kept entries (B's log-probabilities for ids it did not
// keep are taken at its last kept entry's, a lower bound on their gap), in nats; and the shares of
// positions whose kept ids are the same set (topk_set_agree) and the same list in order (topk_seq_agree).
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "fusekit/store.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: fk_store_diff A.fkd B.fkd\n");
        return 2;
    }
    fk_store *a = NULL, *b = NULL;
    if (fk_store_open(argv[1], &a) != FK_OK || fk_store_open(argv[2], &b) != FK_OK) {
        fprintf(stderr, "fk_store_diff: %s\n", fk_last_error());
        return 1;
    }
    const fk_store_header *ha = fk_store_header_of(a), *hb = fk_store_header_of(b);
    if (ha->n_tokens != hb->n_tokens || ha->seq != hb->seq || ha->corpus_fp != hb->corpus_fp) {
        fprintf(stderr, "fk_store_diff: %s and %s are not stores of the same text in the same sequences\n", argv[1], argv[2]);
        return 1;
    }
    fk_store_seq qa = {0}, qb = {0};
    int64_t n = 0, top1 = 0, kset = 0, kseq = 0;
    double sum_d = 0, max_d = 0, ce_a = 0, ce_b = 0, kl = 0;
    for (int64_t c = 0; c < fk_store_n_seqs(a); c++) {
        if (fk_store_read_seq(a, c, &qa) != FK_OK || fk_store_read_seq(b, c, &qb) != FK_OK || qa.n != qb.n) {
            fprintf(stderr, "fk_store_diff: sequence %lld: %s\n", (long long)c, fk_last_error());
            return 1;
        }
        for (int64_t t = 0; t < qa.n; t++) {
            const int32_t *ia = qa.ids + t * qa.k, *ib = qb.ids + t * qb.k;
            const float *la = qa.logp + t * qa.k, *lb = qb.logp + t * qb.k;
            top1 += qa.count[t] > 0 && qb.count[t] > 0 && ia[0] == ib[0];
            bool same_set = qa.count[t] == qb.count[t], same_seq = same_set;
            for (int j = 0; j < qa.count[t] && same_set; j++) {
                bool found = false;
                for (int i = 0; i < qb.count[t] && !found; i++) found = ib[i] == ia[j];
                same_set = found;
                same_seq = same_seq && ia[j] == ib[j];
            }
            kset += same_set;
            kseq += same_set && same_seq;
            double d = fabs((double)qa.ce[t] - qb.ce[t]);
            sum_d += d;
            max_d = d > max_d ? d : max_d;
            ce_a += qa.ce[t];
            ce_b += qb.ce[t];
            double floor_b = qb.count[t] > 0 ? lb[qb.count[t] - 1] : 0;
            for (int j = 0; j < qa.count[t]; j++) {
                double other = floor_b;
                for (int i = 0; i < qb.count[t]; i++)
                    if (ib[i] == ia[j]) { other = lb[i]; break; }
                kl += exp(la[j]) * (la[j] - other);
            }
            n++;
        }
    }
    double dn = n > 0 ? (double)n : 1;
    printf("{\"bench\":\"store_diff\",\"a\":\"%s\",\"b\":\"%s\",\"positions\":%lld,\"top1_agree\":%.5f,\"ce_absdiff_mean\":%.6f,"
           "\"ce_absdiff_max\":%.5f,\"ce_mean_a\":%.6f,\"ce_mean_b\":%.6f,\"kl_kept_mean\":%.6f,\"topk_set_agree\":%.5f,"
           "\"topk_seq_agree\":%.5f}\n",
           argv[1], argv[2], (long long)n, (double)top1 / dn, sum_d / dn, max_d, ce_a / dn, ce_b / dn, kl / dn, (double)kset / dn,
           (double)kseq / dn);
    fk_store_seq_free(&qa);
    fk_store_seq_free(&qb);
    fk_store_close(a);
    fk_store_close(b);
    return 0;
}
