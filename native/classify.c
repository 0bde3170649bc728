/* SPDX-License-Identifier: MIT */
/* classify.c - the compiled classifier (classify.h): anchors, prefix trees, bit vectors.
 *
 * Exactness does not rest on this file: a bucket only proposes candidates,
 * in index order, and icmp6_rule_matches (the walk's own test) confirms each.
 * The bitsets are themselves computed with icmp6_rule_matches, on a copy of
 * each rule that keeps one field's constraint (the rest "any", icmp6_rule_any)
 * and a view that differs from the all-matching one in that field only: this
 * is exact because the walk's test is a conjunction of per-field tests. A
 * packet value outside the domains indexed here (none the parser produces)
 * falls back to icmp6_walk.
 */
#include "strict.h"

#include "classify.h"

#include <stdlib.h>
#include <string.h>

enum {
    K_TYPE, K_CODE, K_MISC, K_HOP, K_CLASS, K_MTU, K_INDEV, K_OUTDEV, K_N,
    DOM_TYPE = 257,              /* type 0..255, 256 = none */
    DOM_MISC = 8 * 4 * 2 * 2 * 3,  /* hook x frag x chain_complete x malformed x nd_valid */
    DOM_HOP = 256,
    DOM_CLASS = 9 * 9,           /* src class x dst class */
    MAX_DEPTH = 130              /* prefix nesting: plen 1..128 */
};

struct u128 { uint64_t hi, lo; };

struct pfx { struct u128 start; uint32_t plen; uint32_t count; };

struct comp {
    uint32_t kind;
    uint32_t n_keys;             /* MTU: interval starts; DEV: distinct devices (keys[0] = 0) */
    const uint64_t *keys;
    const uint32_t *map;         /* domain value -> class */
    const uint64_t *bits;        /* class * words */
};

struct bucket {
    uint32_t n;                  /* rules */
    const uint32_t *rules;       /* global indexes, ascending */
    uint32_t words;              /* 0: a list bucket */
    uint32_t n_comp;
    const struct comp *comp;
};

struct side {
    uint32_t n_nodes;
    const struct pfx *nodes;     /* distinct prefixes, by (start, plen) */
    const int32_t *parent;       /* per node: the next shorter containing prefix, -1 */
    const int32_t *bucket;       /* per node: its bucket, -1 if none */
    uint32_t n_iv;               /* elementary intervals */
    const struct u128 *iv;       /* their starts, ascending, iv[0] = 0 */
    const int32_t *deep;         /* per interval: the longest prefix containing it, -1 */
};

struct alloc { struct alloc *next; };

struct icmp6_cls {
    uint32_t n_rules;
    uint32_t n_buckets;
    struct bucket *buckets;      /* [0]: rules without a prefix */
    struct side side[2];         /* 0 = source, 1 = destination */
    struct icmp6_cls_stats stats;
    uint64_t max_bytes;
    int failed;                  /* an ICMP6_CLS_* status once an allocation failed */
    struct alloc *allocs;
};

/* contract: zeroed memory of n octets owned by c, or NULL (c->failed set). */
static void *cls_alloc(struct icmp6_cls *c, size_t n)
{
    if (c->failed) {
        return NULL;
    }
    size_t total = sizeof(struct alloc) + n;
    if (total > c->max_bytes - c->stats.bytes) {  /* bytes <= max_bytes always */
        c->failed = ICMP6_CLS_TOO_LARGE;
        return NULL;
    }
    struct alloc *a = calloc(1, total);
    if (a == NULL) {
        c->failed = ICMP6_CLS_NOMEM;
        return NULL;
    }
    a->next = c->allocs;
    c->allocs = a;
    c->stats.bytes += total;
    return a + 1;
}

/* contract: count times size, or SIZE_MAX when it overflows (then the budget refuses it). */
static size_t mul(size_t count, size_t size)
{
    return size != 0 && count > SIZE_MAX / size ? SIZE_MAX - 64 : count * size;
}

void icmp6_cls_free(struct icmp6_cls *c)
{
    if (c == NULL) {
        return;
    }
    struct alloc *a = c->allocs;
    while (a != NULL) {
        struct alloc *next = a->next;
        free(a);
        a = next;
    }
    free(c);
}

void icmp6_cls_stats(const struct icmp6_cls *c, struct icmp6_cls_stats *s)
{
    if (s == NULL) {
        return;
    }
    if (c == NULL) {
        memset(s, 0, sizeof *s);
        return;
    }
    *s = c->stats;
}

/* ---- 128-bit prefixes ---- */

static struct u128 load128(const uint8_t *a)
{
    struct u128 x = {0, 0};
    for (int i = 0; i < 8; i++) {
        x.hi = x.hi << 8 | a[i];
        x.lo = x.lo << 8 | a[8 + i];
    }
    return x;
}

static int cmp128(struct u128 a, struct u128 b)
{
    if (a.hi != b.hi) {
        return a.hi < b.hi ? -1 : 1;
    }
    return a.lo < b.lo ? -1 : a.lo > b.lo;
}

static struct u128 mask128(uint32_t plen)
{
    struct u128 m = {0, 0};
    m.hi = plen >= 64 ? UINT64_MAX : plen == 0 ? 0 : UINT64_MAX << (64 - plen);
    m.lo = plen >= 128 ? UINT64_MAX : plen <= 64 ? 0 : UINT64_MAX << (128 - plen);
    return m;
}

/* contract: the rule's prefix on side s, normalized (plen clamped to 128, host bits 0). */
static struct pfx rule_pfx(const struct icmp6_rule *r, int s)
{
    struct pfx p;
    uint32_t plen = s == 0 ? r->src_plen : r->dst_plen;
    p.plen = plen > 128 ? 128 : plen;
    struct u128 a = load128(s == 0 ? r->src_prefix : r->dst_prefix);
    struct u128 m = mask128(p.plen);
    p.start.hi = a.hi & m.hi;
    p.start.lo = a.lo & m.lo;
    p.count = 0;
    return p;
}

static int contains(const struct pfx *p, struct u128 a)
{
    struct u128 m = mask128(p->plen);
    return (a.hi & m.hi) == p->start.hi && (a.lo & m.lo) == p->start.lo;
}

static int pfx_cmp(const void *x, const void *y)
{
    const struct pfx *a = x, *b = y;
    int c = cmp128(a->start, b->start);
    return c != 0 ? c : (a->plen > b->plen) - (a->plen < b->plen);
}

static int u128_cmp(const void *x, const void *y)
{
    return cmp128(*(const struct u128 *)x, *(const struct u128 *)y);
}

static int u64_cmp(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return (a > b) - (a < b);
}

/* contract: index of the node equal to p in the sorted nodes, or -1. */
static int32_t find_node(const struct side *sd, const struct pfx *p)
{
    uint32_t lo = 0, hi = sd->n_nodes;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = pfx_cmp(&sd->nodes[mid], p);
        if (c == 0) {
            return (int32_t)mid;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return -1;
}

/* contract: the last interval of sd starting at or before a (iv[0] = 0, so one exists). */
static uint32_t find_iv(const struct side *sd, struct u128 a)
{
    uint32_t lo = 0, hi = sd->n_iv;
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (cmp128(sd->iv[mid], a) <= 0) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* contract: build side s's tree from the distinct prefixes in nodes[0..n) (sorted,
 * owned by c): parents, elementary intervals and the longest prefix over each. */
static void build_side(struct icmp6_cls *c, struct side *sd, struct pfx *nodes, uint32_t n)
{
    int32_t *parent = cls_alloc(c, mul(n + 1u, sizeof *parent));
    int32_t *bucket = cls_alloc(c, mul(n + 1u, sizeof *bucket));
    struct u128 *iv = cls_alloc(c, mul(2u * (size_t)n + 1u, sizeof *iv));
    int32_t *deep = cls_alloc(c, mul(2u * (size_t)n + 1u, sizeof *deep));
    if (parent == NULL || bucket == NULL || iv == NULL || deep == NULL) {
        return;
    }
    int32_t stack[MAX_DEPTH];
    uint32_t top = 0;
    size_t k = 0;
    iv[k++] = (struct u128){0, 0};
    for (uint32_t i = 0; i < n; i++) {
        while (top > 0 && !contains(&nodes[stack[top - 1]], nodes[i].start)) {
            top--;
        }
        parent[i] = top > 0 ? stack[top - 1] : -1;
        bucket[i] = -1;
        if (top < MAX_DEPTH) {
            stack[top++] = (int32_t)i;
        }
        iv[k++] = nodes[i].start;
        struct u128 m = mask128(nodes[i].plen);
        struct u128 end = {nodes[i].start.hi | ~m.hi, nodes[i].start.lo | ~m.lo};
        if (end.hi != UINT64_MAX || end.lo != UINT64_MAX) {
            end.lo++;
            end.hi += end.lo == 0;
            iv[k++] = end;
        }
    }
    qsort(iv, k, sizeof *iv, u128_cmp);
    size_t u = 0;
    for (size_t i = 0; i < k; i++) {
        if (u == 0 || cmp128(iv[u - 1], iv[i]) != 0) {
            iv[u++] = iv[i];
        }
    }
    sd->nodes = nodes;
    sd->n_nodes = n;
    sd->parent = parent;
    sd->bucket = bucket;
    sd->iv = iv;
    sd->n_iv = (uint32_t)u;
    sd->deep = deep;
    for (size_t i = 0; i < u; i++) {
        /* The last node starting at or before iv[i] is the longest one there; climb
         * its parents to the first that contains iv[i]. */
        uint32_t lo = 0, hi = n;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (cmp128(nodes[mid].start, iv[i]) <= 0) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        int32_t d = lo > 0 ? (int32_t)(lo - 1) : -1;
        while (d >= 0 && !contains(&nodes[d], iv[i])) {
            d = parent[d];
        }
        deep[i] = d;
    }
}

/* ---- per-field bit vectors ---- */

/* contract: *q = rule r reduced to its constraint on field kind (the rest
 * "any"), *v = the view every "any" rule matches. */
static void field_rule(const struct icmp6_rule *r, uint32_t kind, struct icmp6_rule *q,
                       struct icmp6_view *v)
{
    icmp6_rule_any(q);
    memset(v, 0, sizeof *v);
    v->icmpv6_type = -1;
    v->icmpv6_code = -1;
    v->nd_valid = -1;
    v->mtu = -1;
    switch (kind) {
    case K_TYPE:
        memcpy(q->types, r->types, sizeof q->types);
        q->need = r->need & ICMP6_NEED_TYPE;
        q->roles = r->roles;
        q->ike = r->ike;
        break;
    case K_CODE:
        memcpy(q->codes, r->codes, sizeof q->codes);
        q->need = r->need & ICMP6_NEED_CODE;
        break;
    case K_MISC:
        q->hooks = r->hooks;
        q->frag = r->frag;
        q->chain_complete = r->chain_complete;
        q->malformed = r->malformed;
        q->need = r->need & ICMP6_NEED_ND;
        q->nd_valid = r->nd_valid;
        break;
    case K_HOP:
        q->hop_min = r->hop_min;
        q->hop_max = r->hop_max;
        break;
    case K_CLASS:
        q->src_classes = r->src_classes;
        q->dst_classes = r->dst_classes;
        break;
    case K_MTU:
        q->need = r->need & ICMP6_NEED_MTU;
        q->mtu_min = r->mtu_min;
        q->mtu_max = r->mtu_max;
        break;
    case K_INDEV:
        q->indev = r->indev;
        break;
    default:
        q->outdev = r->outdev;
        break;
    }
}

/* contract: 1 iff q (from field_rule) matches a packet whose value in field
 * kind is domain value x (keys: that field's), v being field_rule's view. */
static int field_passes(const struct icmp6_table *t, const struct icmp6_rule *q,
                        struct icmp6_view *v, uint32_t kind, uint32_t x, const uint64_t *keys)
{
    uint32_t hook = 0, indev = 0, outdev = 0;
    switch (kind) {
    case K_TYPE:
        v->icmpv6_type = x == 256 ? -1 : (int16_t)x;
        break;
    case K_CODE:
        v->icmpv6_code = x == 256 ? -1 : (int16_t)x;
        break;
    case K_MISC:
        hook = x / 48u;
        v->frag_status = (uint8_t)(x % 48u / 12u);
        v->chain_complete = (uint8_t)(x % 12u / 6u);
        v->malformed = x % 6u / 3u;
        v->nd_valid = (int8_t)((int)(x % 3u) - 1);
        break;
    case K_HOP:
        v->hop_limit = (uint8_t)x;
        break;
    case K_CLASS:
        v->src_class = (uint8_t)(x / 9u);
        v->dst_class = (uint8_t)(x % 9u);
        break;
    case K_MTU:
        v->mtu = x == 0 ? -1 : (int64_t)keys[x - 1];
        break;
    case K_INDEV:
        indev = (uint32_t)keys[x];
        break;
    default:
        outdev = (uint32_t)keys[x];
        break;
    }
    return icmp6_rule_matches(t, q, v, hook, indev, outdev);
}

/* contract: the keys of field kind over the bucket's rules (MTU: interval starts over
 * 0..2^32-1; DEV: 0 then the distinct devices named), *n_keys set; NULL when
 * no rule constrains the field (or on allocation failure). */
static uint64_t *field_keys(struct icmp6_cls *c, const struct icmp6_table *t,
                            const uint32_t *rules, uint32_t n, uint32_t kind, uint32_t *n_keys)
{
    uint64_t *keys = cls_alloc(c, mul(2u * (size_t)n + 1u, sizeof *keys));
    size_t k = 0;
    int used = 0;
    if (keys == NULL) {
        return NULL;
    }
    keys[k++] = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct icmp6_rule *r = &t->rules[rules[i]];
        if (kind == K_MTU && (r->need & ICMP6_NEED_MTU)) {
            int64_t lo = r->mtu_min < 0 ? 0 : r->mtu_min;
            int64_t hi = r->mtu_max > (int64_t)UINT32_MAX ? (int64_t)UINT32_MAX : r->mtu_max;
            used = 1;
            if (lo <= hi) {
                keys[k++] = (uint64_t)lo;
                if (hi < (int64_t)UINT32_MAX) {
                    keys[k++] = (uint64_t)hi + 1u;
                }
            }
        } else if (kind != K_MTU) {
            uint32_t dev = kind == K_INDEV ? r->indev : r->outdev;
            if (dev != 0) {
                keys[k++] = dev;
                used = 1;
            }
        }
    }
    if (!used) {
        return NULL;
    }
    qsort(keys, k, sizeof *keys, u64_cmp);
    size_t u = 0;
    for (size_t i = 0; i < k; i++) {
        if (u == 0 || keys[u - 1] != keys[i]) {
            keys[u++] = keys[i];
        }
    }
    *n_keys = (uint32_t)u;
    return keys;
}

static uint64_t hash_words(const uint64_t *w, uint32_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (uint32_t i = 0; i < n; i++) {
        h = (h ^ w[i]) * 1099511628211ull;
        h ^= h >> 29;
    }
    return h;
}

/* contract: build field kind over the bucket's rules into *out; 0 when the
 * field constrains nothing there (every value selects every rule). */
static int build_field(struct icmp6_cls *c, const struct icmp6_table *t, const uint32_t *rules,
                       uint32_t n, uint32_t words, uint32_t kind, struct comp *out)
{
    static const uint32_t fixed[] = {DOM_TYPE, DOM_TYPE, DOM_MISC, DOM_HOP, DOM_CLASS};
    uint32_t n_keys = 0;
    const uint64_t *keys = NULL;
    uint32_t dom;
    if (kind < K_MTU) {
        dom = fixed[kind];
    } else {
        keys = field_keys(c, t, rules, n, kind, &n_keys);
        if (keys == NULL) {
            return 0;
        }
        dom = kind == K_MTU ? n_keys + 1u : n_keys;
    }
    uint32_t *map = cls_alloc(c, mul(dom, sizeof *map));
    uint64_t *bits = cls_alloc(c, mul(mul(dom, words), sizeof *bits));
    uint32_t slots = 1;
    while (slots < 2u * dom) {
        slots <<= 1;
    }
    int32_t *table = calloc(slots, sizeof *table);  /* dedup index: freed below */
    if (map == NULL || bits == NULL || table == NULL) {
        free(table);
        if (!c->failed) {
            c->failed = ICMP6_CLS_NOMEM;
        }
        return 0;
    }
    /* One row per domain value, rule by rule (a rule's reduced form is made
     * once), then rows with equal bits merged into classes, in place. */
    memset(bits, 0, mul(mul(dom, words), sizeof *bits));
    for (uint32_t i = 0; i < n; i++) {
        struct icmp6_rule q;
        struct icmp6_view v;
        field_rule(&t->rules[rules[i]], kind, &q, &v);
        for (uint32_t x = 0; x < dom; x++) {
            if (field_passes(t, &q, &v, kind, x, keys)) {
                bits[(size_t)x * words + (i >> 6)] |= 1ull << (i & 63u);
            }
        }
    }
    uint32_t classes = 0;
    for (uint32_t x = 0; x < dom; x++) {
        const uint64_t *src = &bits[(size_t)x * words];
        uint32_t s = (uint32_t)hash_words(src, words) & (slots - 1u);
        while (table[s] != 0 &&
               memcmp(&bits[(size_t)(table[s] - 1) * words], src, sizeof *src * words) != 0) {
            s = (s + 1u) & (slots - 1u);
        }
        if (table[s] == 0) {
            memmove(&bits[(size_t)classes * words], src, sizeof *src * words);
            table[s] = (int32_t)++classes;
        }
        map[x] = (uint32_t)table[s] - 1u;
    }
    free(table);
    int all = classes == 1;
    for (uint32_t i = 0; all && i < n; i++) {
        all = (int)((bits[i >> 6] >> (i & 63u)) & 1u);
    }
    if (all) {
        return 0;
    }
    out->kind = kind;
    out->n_keys = n_keys;
    out->keys = keys;
    out->map = map;
    out->bits = bits;
    c->stats.fields++;
    c->stats.classes += classes;
    return 1;
}

/* contract: make bucket b over rules[0..n) (ascending): a list, or bit vectors. */
static void build_bucket(struct icmp6_cls *c, const struct icmp6_table *t, struct bucket *b,
                         uint32_t *rules, uint32_t n)
{
    b->n = n;
    b->rules = rules;
    c->stats.buckets++;
    c->stats.largest_bucket = n > c->stats.largest_bucket ? n : c->stats.largest_bucket;
    if (n <= ICMP6_CLS_LIST_MAX) {
        c->stats.list_buckets++;
        return;
    }
    struct comp *comp = cls_alloc(c, sizeof *comp * K_N);
    if (comp == NULL) {
        return;
    }
    uint32_t words = (n + 63u) / 64u;
    uint32_t k = 0;
    for (uint32_t kind = 0; kind < K_N && !c->failed; kind++) {
        k += (uint32_t)build_field(c, t, rules, n, words, kind, &comp[k]);
    }
    b->comp = comp;
    b->n_comp = k;
    b->words = words;
    c->stats.bitvec_buckets++;
}

/* contract: collect side s's distinct prefixes with the number of rules naming each. */
static struct pfx *distinct_prefixes(struct icmp6_cls *c, const struct icmp6_table *t, int s,
                                     uint32_t *n_out)
{
    struct pfx *p = cls_alloc(c, mul(t->n_rules + 1u, sizeof *p));
    uint32_t n = 0;
    if (p == NULL) {
        return NULL;
    }
    for (uint32_t i = 0; i < t->n_rules; i++) {
        struct pfx x = rule_pfx(&t->rules[i], s);
        if (x.plen > 0) {
            p[n++] = x;
        }
    }
    qsort(p, n, sizeof *p, pfx_cmp);
    uint32_t u = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (u == 0 || pfx_cmp(&p[u - 1], &p[i]) != 0) {
            p[u++] = p[i];
        }
        p[u - 1].count++;
    }
    *n_out = u;
    return p;
}

/* contract: anchor every rule (bucket 0 or a prefix's bucket), then build the buckets. */
static void build_buckets(struct icmp6_cls *c, const struct icmp6_table *t)
{
    uint32_t n = t->n_rules;
    uint32_t *anchor = cls_alloc(c, mul(n + 1u, sizeof *anchor));  /* 0, or 1 + bucket key */
    uint32_t nb = 1u + c->side[0].n_nodes + c->side[1].n_nodes;
    uint32_t *count = cls_alloc(c, mul(nb, sizeof *count));
    uint32_t *start = cls_alloc(c, mul(nb + 1u, sizeof *start));
    uint32_t *order = cls_alloc(c, mul(n + 1u, sizeof *order));
    c->buckets = cls_alloc(c, mul(nb, sizeof *c->buckets));
    if (anchor == NULL || count == NULL || start == NULL || order == NULL || c->buckets == NULL) {
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct pfx p[2] = {rule_pfx(&t->rules[i], 0), rule_pfx(&t->rules[i], 1)};
        int32_t node[2] = {-1, -1};
        for (int s = 0; s < 2; s++) {
            node[s] = p[s].plen > 0 ? find_node(&c->side[s], &p[s]) : -1;
        }
        /* Anchor on the side whose prefix fewer rules share: smaller buckets. */
        int s = node[0] < 0 ? 1
                : node[1] < 0 ? 0
                : c->side[1].nodes[node[1]].count < c->side[0].nodes[node[0]].count;
        anchor[i] = node[s] < 0 ? 0 : 1u + (uint32_t)node[s] + (s == 1 ? c->side[0].n_nodes : 0u);
        count[anchor[i]]++;
    }
    for (uint32_t b = 0; b < nb; b++) {
        start[b + 1] = start[b] + count[b];
        count[b] = start[b];
    }
    for (uint32_t i = 0; i < n; i++) {
        order[count[anchor[i]]++] = i;  /* ascending within each bucket */
    }
    c->n_buckets = nb;
    for (uint32_t b = 0; b < nb && !c->failed; b++) {
        uint32_t size = start[b + 1] - start[b];
        if (size > 0) {
            build_bucket(c, t, &c->buckets[b], order + start[b], size);
        }
        if (b > 0) {
            int s = b > c->side[0].n_nodes;
            uint32_t node = b - 1u - (s ? c->side[0].n_nodes : 0u);
            ((int32_t *)c->side[s].bucket)[node] = size > 0 ? (int32_t)b : -1;
        }
    }
    c->stats.src_prefixes = c->side[0].n_nodes;
    c->stats.dst_prefixes = c->side[1].n_nodes;
}

int icmp6_cls_build(const struct icmp6_table *t, uint64_t max_bytes, struct icmp6_cls **out)
{
    if (out == NULL) {
        return ICMP6_CLS_BAD_ARGS;
    }
    *out = NULL;
    if (t == NULL || (t->rules == NULL && t->n_rules > 0) || t->n_rules >= UINT32_MAX / 4u) {
        return ICMP6_CLS_BAD_ARGS;
    }
    if (max_bytes < sizeof(struct icmp6_cls)) {
        return ICMP6_CLS_TOO_LARGE;
    }
    struct icmp6_cls *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return ICMP6_CLS_NOMEM;
    }
    c->max_bytes = max_bytes;
    c->stats.bytes = sizeof *c;
    c->n_rules = t->n_rules;
    c->stats.n_rules = t->n_rules;
    for (int s = 0; s < 2 && !c->failed; s++) {
        uint32_t n = 0;
        struct pfx *nodes = distinct_prefixes(c, t, s, &n);
        if (nodes != NULL) {
            build_side(c, &c->side[s], nodes, n);
        }
    }
    if (!c->failed) {
        build_buckets(c, t);
    }
    if (c->failed) {
        int status = c->failed;
        icmp6_cls_free(c);
        return status;
    }
    *out = c;
    return ICMP6_CLS_OK;
}

/* ---- per packet ---- */

/* contract: the domain value of field f for this packet. */
static uint32_t field_value(const struct comp *f, const struct icmp6_view *v, uint32_t hook,
                            uint32_t indev, uint32_t outdev)
{
    switch (f->kind) {
    case K_TYPE:
        return v->icmpv6_type < 0 ? 256u : (uint32_t)v->icmpv6_type;
    case K_CODE:
        return v->icmpv6_code < 0 ? 256u : (uint32_t)v->icmpv6_code;
    case K_MISC:
        return hook * 48u + v->frag_status * 12u + v->chain_complete * 6u
               + (v->malformed != 0) * 3u + (uint32_t)(v->nd_valid + 1);
    case K_HOP:
        return v->hop_limit;
    case K_CLASS:
        return v->src_class * 9u + v->dst_class;
    default:
        break;
    }
    uint64_t x = f->kind == K_MTU ? (uint64_t)v->mtu : f->kind == K_INDEV ? indev : outdev;
    if (f->kind == K_MTU && v->mtu < 0) {
        return 0;
    }
    uint32_t lo = 0, hi = f->n_keys;  /* the last key <= x; keys[0] = 0 */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (f->keys[mid] <= x) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    if (f->kind == K_MTU) {
        return lo + 1u;
    }
    return f->keys[lo] == x ? lo : 0u;  /* a device no rule names: the "any" value 0 */
}

/* contract: lower *best to the first rule of bucket b matching (below *best). */
static void search_bucket(const struct bucket *b, const struct icmp6_table *t,
                          const struct icmp6_view *v, uint32_t hook, uint32_t indev,
                          uint32_t outdev, uint32_t *best)
{
    if (b->n == 0 || b->rules[0] >= *best) {
        return;
    }
    if (b->words == 0) {
        for (uint32_t i = 0; i < b->n && b->rules[i] < *best; i++) {
            if (icmp6_rule_matches(t, &t->rules[b->rules[i]], v, hook, indev, outdev)) {
                *best = b->rules[i];
                return;
            }
        }
        return;
    }
    const uint64_t *row[K_N];
    for (uint32_t k = 0; k < b->n_comp; k++) {
        const struct comp *f = &b->comp[k];
        row[k] = &f->bits[(size_t)f->map[field_value(f, v, hook, indev, outdev)] * b->words];
    }
    for (uint32_t w = 0; w < b->words; w++) {
        uint64_t x = UINT64_MAX;
        for (uint32_t k = 0; k < b->n_comp; k++) {
            x &= row[k][w];
        }
        while (x != 0) {
            uint32_t i = w * 64u + (uint32_t)__builtin_ctzll(x);
            if (i >= b->n || b->rules[i] >= *best) {
                return;
            }
            if (icmp6_rule_matches(t, &t->rules[b->rules[i]], v, hook, indev, outdev)) {
                *best = b->rules[i];
                return;
            }
            x &= x - 1u;
        }
    }
}

/* contract: 1 iff every value of v the fields index lies in their domains. */
static int in_domains(const struct icmp6_view *v)
{
    return v->icmpv6_type >= -1 && v->icmpv6_type <= 255 && v->icmpv6_code >= -1 &&
           v->icmpv6_code <= 255 && v->frag_status <= ICMP6_FRAG_NON_FIRST &&
           v->chain_complete <= 1 && v->nd_valid >= -1 && v->nd_valid <= 1 &&
           v->src_class <= ICMP6_ADDR_ABSENT && v->dst_class <= ICMP6_ADDR_ABSENT &&
           v->mtu >= -1 && v->mtu <= (int64_t)UINT32_MAX;
}

uint32_t icmp6_cls_first(const struct icmp6_cls *c, const struct icmp6_table *t,
                         const struct icmp6_view *v, uint32_t hook, uint32_t indev,
                         uint32_t outdev)
{
    if (t == NULL || v == NULL) {
        return t != NULL ? t->n_rules : 0;
    }
    if (c == NULL || c->n_rules != t->n_rules || t->rules == NULL || !in_domains(v)) {
        return icmp6_walk(t, v, hook, indev, outdev);
    }
    uint32_t best = t->n_rules;
    if (hook > 7) {
        return best;  /* the walk's test refuses every rule there */
    }
    search_bucket(&c->buckets[0], t, v, hook, indev, outdev, &best);
    for (int s = 0; s < 2; s++) {
        const struct side *sd = &c->side[s];
        if (sd->n_nodes == 0 || (s == 0 ? v->src_class : v->dst_class) == ICMP6_ADDR_ABSENT) {
            continue;  /* an absent address is inside no prefix */
        }
        int32_t node = sd->deep[find_iv(sd, load128(s == 0 ? v->src : v->dst))];
        for (uint32_t depth = 0; node >= 0 && depth < MAX_DEPTH; depth++) {
            if (sd->bucket[node] >= 0) {
                search_bucket(&c->buckets[sd->bucket[node]], t, v, hook, indev, outdev, &best);
            }
            node = sd->parent[node];
        }
    }
    return best;
}
