/* SPDX-License-Identifier: MIT */
/* classify.h - the compiled classifier: the first match of the rule walk, without the walk.
 *
 * Built once per (re)load from a table's rules (icmp6_cls_build), then
 * consulted by icmp6_classify for every packet instead of walking the rules.
 * It returns exactly what the walk returns (icmp6_walk, kept as the
 * reference): its structures only name candidate rules, and every candidate
 * is confirmed with icmp6_rule_matches, lowest index first.
 *
 * Structure (docs/design.md, "The compiled classifier"):
 *  - each rule is anchored on its source prefix, its destination prefix
 *    (whichever is shared by fewer rules) or, with neither, on bucket 0;
 *  - per address side, the distinct prefixes form a laminar tree; its
 *    elementary intervals are binary-searched and the packet's chain of
 *    containing prefixes names the buckets that can match;
 *  - a bucket of up to ICMP6_CLS_LIST_MAX rules is a sorted list, a larger
 *    one a bit-vector classifier (Lakshman-Stiliadis): per field, the
 *    packet's value selects a bitset of the bucket's rules (values with equal
 *    bitsets share one), the bitsets are ANDed word by word and the first
 *    set bit is the first candidate.
 * Per packet: two binary searches, one bucket per prefix on each chain, and
 * per bit-vector bucket (rules / 64) words per field. No allocation, no
 * writes. Building allocates (malloc), bounded by max_bytes; this is the one
 * place our C allocates, and only at (re)load. Like icmp6.h this file is cffi
 * cdef input ('#' lines dropped).
 */
#ifndef ICMP6_SHIM_CLASSIFY_H
#define ICMP6_SHIM_CLASSIFY_H

#include <stdint.h>
#include <stddef.h>
#include "icmp6.h"

enum {
    ICMP6_CLS_LIST_MAX = 8,      /* a bucket up to this many rules is walked as a list */
    ICMP6_CLS_OK = 0,            /* icmp6_cls_build statuses */
    ICMP6_CLS_TOO_LARGE = 1,     /* it would need more than max_bytes */
    ICMP6_CLS_NOMEM = 2,         /* malloc failed */
    ICMP6_CLS_BAD_ARGS = 3
};

/* What a built classifier holds (icmp6_cls_stats). */
struct icmp6_cls_stats {
    uint64_t bytes;              /* memory it holds */
    uint32_t n_rules;
    uint32_t buckets;            /* non-empty buckets */
    uint32_t list_buckets;
    uint32_t bitvec_buckets;
    uint32_t largest_bucket;     /* rules */
    uint32_t src_prefixes;       /* distinct anchoring prefixes per side */
    uint32_t dst_prefixes;
    uint32_t fields;             /* bit-vector fields over all bit-vector buckets */
    uint32_t classes;            /* distinct bitsets over all of them */
};

/* contract: build the classifier of t's rules, type_role and type_ike (a
 * change to any of them needs a new one) into *out, allocating at most
 * max_bytes; returns an ICMP6_CLS_* status, *out NULL unless OK. */
int icmp6_cls_build(const struct icmp6_table *t, uint64_t max_bytes, struct icmp6_cls **out);

/* contract: free c and everything it holds (NULL: nothing). */
void icmp6_cls_free(struct icmp6_cls *c);

/* contract: fill *s with what c holds (zeros for NULL). */
void icmp6_cls_stats(const struct icmp6_cls *c, struct icmp6_cls_stats *s);

/* contract: the index of the first rule of t matching v, or t->n_rules,
 * computed with c (built from t); equal to icmp6_walk for every input. */
uint32_t icmp6_cls_first(const struct icmp6_cls *c, const struct icmp6_table *t,
                         const struct icmp6_view *v, uint32_t hook, uint32_t indev,
                         uint32_t outdev);

#endif /* ICMP6_SHIM_CLASSIFY_H */
