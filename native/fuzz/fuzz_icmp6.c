/* SPDX-License-Identifier: MIT */
/* fuzz_icmp6.c - libFuzzer target for icmp6_parse and icmp6_classify.
 *
 * Input: octet 0 picks ext_limit (0..255, exercising the clamp) and the
 * hook; the rest is the packet. Besides ASan/UBSan, the target aborts when a
 * view breaks an invariant of the contract in icmp6.h, so logic errors show
 * up as crashes too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "icmp6.h"
#include "classify.h"

/* contract: abort (a crash for libFuzzer) when cond is false. */
#define CHECK(cond) do { if (!(cond)) { abort(); } } while (0)

enum { N_RULES = 6 };

/* contract: build a small fixed table that touches every rule field. */
static void build_table(struct icmp6_table *t, struct icmp6_rule *rules, uint64_t *hits)
{
    for (int i = 0; i < N_RULES; i++) {
        icmp6_rule_any(&rules[i]);
    }
    memset(rules[0].types, 0, sizeof rules[0].types);
    rules[0].types[2] = 1ull << (135 - 128) | 1ull << (136 - 128);  /* NS, NA */
    rules[0].need = ICMP6_NEED_TYPE | ICMP6_NEED_ND;
    rules[0].nd_valid = 1;
    rules[0].hop_min = 255;
    rules[1].need = ICMP6_NEED_MTU;
    rules[1].mtu_min = 1280;
    rules[1].mtu_max = 0xffffffff;
    rules[1].src_plen = 33;
    rules[1].src_prefix[0] = 0x20;
    rules[1].src_prefix[1] = 0x01;
    rules[1].src_prefix[4] = 0x80;
    rules[2].malformed = 1;
    rules[2].dst_plen = 200;                /* clamped to 128 */
    rules[3].frag = 1u << ICMP6_FRAG_NON_FIRST;
    rules[3].indev = 2;
    rules[4].roles = ICMP6_ROLE_LINK_LOCAL;
    rules[4].chain_complete = 0;
    rules[4].need = ICMP6_NEED_CODE;
    memset(rules[4].codes, 0, sizeof rules[4].codes);
    rules[4].codes[0] = 1;
    rules[5].hooks = 1u << ICMP6_HOOK_FORWARD;
    memset(t, 0, sizeof *t);
    for (int i = 0; i < 256; i++) {
        t->type_role[i] = (uint8_t)(1u << (i % 4));
        t->type_ike[i] = (uint8_t)(1u << (i % 3));
    }
    t->n_rules = N_RULES;
    t->rules = rules;
    t->hits = hits;
}

/* contract: abort unless v, parsed from len octets with limit, is consistent. */
static void check_view(const struct icmp6_view *v, size_t len, uint32_t limit)
{
    uint32_t clamped = limit < 1 ? 1 : limit > ICMP6_EXT_MAX ? ICMP6_EXT_MAX : limit;
    CHECK(v->n_ext <= clamped);
    CHECK(v->frag_status <= ICMP6_FRAG_NON_FIRST);
    CHECK(v->src_class <= ICMP6_ADDR_ABSENT && v->dst_class <= ICMP6_ADDR_ABSENT);
    CHECK((v->src_class == ICMP6_ADDR_ABSENT) == (len < 40));
    CHECK(v->malformed < 64);
    CHECK(v->nd_failed < 1024);
    CHECK(v->icmpv6_length <= (len > 40 ? len - 40 : 0));
    CHECK((v->icmpv6_type < 0) == (v->icmpv6_code < 0));
    CHECK(v->icmpv6_type < 256 && v->icmpv6_code < 256);
    CHECK(v->upper_layer >= -1 && v->upper_layer < 256);
    CHECK(v->upper_layer < 0 ? v->upper_layer_offset == 0 : v->upper_layer_offset <= len);
    CHECK(v->nd_valid == -1 ? v->nd_failed == 0 : v->nd_valid == (v->nd_failed == 0));
    CHECK(v->mtu >= -1 && v->mtu <= 0xffffffffll);
    CHECK(v->mtu < 0 || v->icmpv6_type == 2);
    CHECK(!v->chain_complete || v->upper_layer >= 0);
    CHECK(v->icmpv6_type < 0 || v->upper_layer == 58);
}

/* contract: abort unless the non-ICMPv6 decision and the fate table keep
 * their contract for this packet (walk result idx, view v): other traffic
 * gets n_rules + 1, a first fragment is stored, and the same datagram's
 * non-first fragment (the packet with its leading Fragment header's offset
 * made non-zero) follows it. */
static void check_fate(struct icmp6_table *t, const uint8_t *pkt, size_t len, uint32_t hook,
                       uint32_t idx, const struct icmp6_view *v)
{
    static uint8_t copy[4096];
    struct icmp6_fate_entry slots[4];
    struct icmp6_fate fate;
    struct icmp6_view w;
    memset(slots, 0, sizeof slots);
    memset(&fate, 0, sizeof fate);
    fate.slots = slots;
    fate.n_slots = 4;
    fate.ttl = 60;
    fate.now = 7;
    t->non_icmpv6 = 1;
    t->fate = &fate;
    uint32_t want = icmp6_is_non_icmpv6(v) ? N_RULES + 1 : idx;
    uint32_t got = icmp6_classify(t, pkt, len, hook, 2, 3, &w);
    CHECK(got <= N_RULES + 1);
    CHECK(v->frag_status == ICMP6_FRAG_NON_FIRST || got == want);
    CHECK(v->frag_status != ICMP6_FRAG_NON_FIRST || fate.last == ICMP6_FATE_UNKNOWN);
    CHECK((fate.last == ICMP6_FATE_STORED) == (v->frag_status == ICMP6_FRAG_FIRST));
    int frags = 0;  /* the copy's key comes from its first Fragment header: only one may exist */
    for (uint32_t i = 0; i < v->n_ext; i++) {
        frags += v->ext[i] == 44;
    }
    if (v->frag_status == ICMP6_FRAG_FIRST && frags == 1 && v->ext[0] == 44 &&
        len <= sizeof copy && len >= 48) {
        memcpy(copy, pkt, len);
        copy[43] = (uint8_t)(copy[43] | 0x08);  /* offset 1 (8 octets), same datagram */
        CHECK(icmp6_classify(t, copy, len, hook, 2, 3, &w) == got);
        CHECK(fate.last == ICMP6_FATE_FOLLOWED && fate.followed == 1);
        fate.now += 61;  /* past the ttl: forgotten, walked again */
        icmp6_classify(t, copy, len, hook, 2, 3, &w);
        CHECK(fate.last == ICMP6_FATE_UNKNOWN);
    }
    t->fate = NULL;
    t->non_icmpv6 = 0;
}

enum { N_BIG = 20 };

/* contract: abort unless the compiled classifier of a table of N_BIG rules,
 * derived from the fixed ones with prefixes taken from the packet itself (so
 * they anchor and contain it, or just miss it) and varied ranges, devices and
 * hooks, gives icmp6_walk's first match; a too-small budget is refused. */
static void check_compiled(const struct icmp6_table *base, const struct icmp6_rule *rules,
                           const struct icmp6_view *v, const uint8_t *data, size_t size,
                           uint32_t hook)
{
    static struct icmp6_rule big[N_BIG];
    struct icmp6_table t = *base;
    for (uint32_t i = 0; i < N_BIG; i++) {
        uint8_t b = data[i % size];
        big[i] = rules[i % N_RULES];
        if (b & 1u) {
            memcpy(big[i].src_prefix, v->src, 16);
            big[i].src_plen = (uint8_t)((b >> 1) % 130u);
            big[i].src_prefix[(b >> 3) % 16u] ^= (uint8_t)(b & 0x80u);
        }
        if (b & 2u) {
            memcpy(big[i].dst_prefix, v->dst, 16);
            big[i].dst_plen = (uint8_t)(i % 3u == 0 ? 128u : (i * 13u) % 140u);
        }
        if (b & 4u) {
            big[i].hop_min = (uint8_t)(b & 0xf0u);
            big[i].hop_max = (uint8_t)(big[i].hop_min + (b & 0x0fu) * 16u);
        }
        if (b & 8u) {
            big[i].indev = i % 2u ? 2u : 5u;
            big[i].outdev = i % 3u ? 0u : 3u;
        }
        if (b & 16u) {
            big[i].hooks = (uint8_t)(1u << (b % 5u));
            big[i].need |= ICMP6_NEED_MTU;
            big[i].mtu_min = b * 10;
            big[i].mtu_max = b * 100;
        }
    }
    t.rules = big;
    t.n_rules = N_BIG;
    t.cand_off = NULL;
    t.cand = NULL;
    t.cls = NULL;
    struct icmp6_cls *c = NULL;
    CHECK(icmp6_cls_build(&t, 64, &c) == ICMP6_CLS_TOO_LARGE && c == NULL);
    CHECK(icmp6_cls_build(&t, 64u << 20, &c) == ICMP6_CLS_OK && c != NULL);
    for (uint32_t in = 0; in < 4; in++) {
        CHECK(icmp6_cls_first(c, &t, v, hook, in + 2u, 3) == icmp6_walk(&t, v, hook, in + 2u, 3));
    }
    icmp6_cls_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct icmp6_rule rules[N_RULES];
    uint64_t hits[N_RULES + 2] = {0};
    struct icmp6_table t;
    struct icmp6_view v;
    struct icmp6_view again;
    if (size == 0) {
        CHECK(icmp6_parse(data, 0, 16, &v) == 0);
        check_view(&v, 0, 16);
        return 0;
    }
    uint32_t limit = data[0];
    uint32_t hook = data[0] % 9;  /* 5..8 are not hooks: nothing may match */
    const uint8_t *pkt = data + 1;
    size_t len = size - 1;
    CHECK(icmp6_parse(pkt, len, limit, &v) == 0);
    check_view(&v, len, limit);
    CHECK(v.frag_status == ICMP6_FRAG_NONE ? v.frag_next == -1 : v.frag_next >= 0);
    CHECK(icmp6_parse(pkt, len, limit, &again) == 0);
    CHECK(memcmp(&v, &again, sizeof v) == 0);  /* deterministic, padding included */

    build_table(&t, rules, hits);
    t.ext_limit = limit;
    uint32_t idx = icmp6_classify(&t, pkt, len, hook, 2, 3, &v);
    CHECK(idx <= N_RULES);
    CHECK(hits[idx] == 1);
    for (uint32_t i = 0; i < idx; i++) {
        CHECK(!icmp6_rule_matches(&t, &rules[i], &v, hook, 2, 3));
    }
    CHECK(idx == N_RULES || icmp6_rule_matches(&t, &rules[idx], &v, hook, 2, 3));
    CHECK(hook <= ICMP6_HOOK_POSTROUTING || idx == N_RULES);
    t.hits = NULL;
    CHECK(icmp6_classify(&t, pkt, len, hook, 2, 3, NULL) == idx);
    /* The per-type candidate lists must give the same answer as the full walk. */
    static uint32_t cand_off[258];
    static uint32_t cand[257 * N_RULES];
    uint32_t used = icmp6_index_candidates(&t, cand_off, cand, 257 * N_RULES);
    CHECK(used > 0);
    CHECK(icmp6_index_candidates(&t, cand_off, cand, used - 1) == 0);  /* too small: refused */
    CHECK(icmp6_index_candidates(&t, cand_off, cand, 257 * N_RULES) == used);
    t.cand_off = cand_off;
    t.cand = cand;
    t.n_cand = used;
    CHECK(icmp6_classify(&t, pkt, len, hook, 2, 3, NULL) == idx);
    check_fate(&t, pkt, len, hook, idx, &v);
    /* The compiled classifier of the fixed table, through icmp6_classify. */
    t.cand_off = NULL;
    t.cand = NULL;
    struct icmp6_cls *c = NULL;
    CHECK(icmp6_cls_build(&t, 1u << 20, &c) == ICMP6_CLS_OK);
    t.cls = c;
    CHECK(icmp6_classify(&t, pkt, len, hook, 2, 3, NULL) == idx);
    t.cls = NULL;
    icmp6_cls_free(c);
    check_compiled(&t, rules, &v, data, size, hook);
    return 0;
}
