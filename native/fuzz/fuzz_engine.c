/* SPDX-License-Identifier: MIT */
/* fuzz_engine.c - libFuzzer target for the netlink side of engine.c.
 *
 * Input: octet 0 picks the on_error kind and which plan entries log; the rest
 * is one received datagram (any bytes: netlink messages, truncated or not).
 * Invariants checked besides ASan/UBSan:
 *  - every verdict has a valid NF verdict and sets a mark only for MARK plans;
 *  - counters add up (packets judged == verdicts written; actions <= packets);
 *  - the encoded messages, replayed with the kernel's batch semantics (a batch
 *    for id X covers every still-unanswered id <= X), answer every verdict
 *    exactly once and with its own verdict and mark;
 *  - the log ring never holds more than its capacity.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

#define CHECK(cond) do { if (!(cond)) { abort(); } } while (0)

enum { N_RULES = 3, CAP = ENGINE_VERDICT_MAX, LOG_CAP = 4 };

/* contract: a small table: rule 0 echo request, rule 1 NS, rule 2 anything. */
static void build(struct icmp6_table *t, struct icmp6_rule *r, uint64_t *hits, uint64_t *types)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < N_RULES; i++) {
        icmp6_rule_any(&r[i]);
    }
    memset(r[0].types, 0, sizeof r[0].types);
    r[0].types[2] = 1ull;            /* 128 */
    r[0].need = ICMP6_NEED_TYPE;
    memset(r[1].types, 0, sizeof r[1].types);
    r[1].types[2] = 1ull << 7;       /* 135 */
    r[1].need = ICMP6_NEED_TYPE;
    r[2].malformed = 0;
    t->n_rules = N_RULES;
    t->rules = r;
    t->ext_limit = 16;
    t->hits = hits;
    t->type_hits = types;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* contract: replay encoded messages against the verdicts as the kernel does
 * (v in arrival order is its queue; a batch dequeues from the head every id
 * not after its id, modulo 2^32; a single answers its id); abort unless each
 * verdict is answered exactly once, with its own verdict and mark. */
static void replay(const struct engine_verdict *v, size_t n, const uint8_t *buf, size_t len)
{
    uint8_t answered[CAP] = {0};
    size_t off = 0, done = 0;
    while (off < len) {
        uint32_t mlen;
        uint16_t type;
        memcpy(&mlen, buf + off, 4);
        memcpy(&type, buf + off + 4, 2);
        CHECK(mlen == 32 || mlen == 40);
        CHECK(off + mlen <= len);
        uint32_t verdict = be32(buf + off + 24), id = be32(buf + off + 28);
        int batch = type == ((3 << 8) | 3);
        size_t hit = 0;
        for (size_t k = 0; k < n; k++) {
            if (answered[k]) {
                continue;
            }
            if (batch ? (int32_t)(v[k].id - id) > 0 : v[k].id != id) {
                if (batch) {
                    break;  /* the kernel stops at the first id after the batch id */
                }
                continue;
            }
            CHECK(v[k].verdict == verdict);
            CHECK(v[k].set_mark == (mlen == 40));
            CHECK(mlen == 32 || v[k].mark == be32(buf + off + 36));
            answered[k] = 1;
            hit++;
            if (!batch) {
                break;
            }
        }
        CHECK(hit > 0);
        done += hit;
        off += mlen;
    }
    CHECK(done == n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct engine e;
    static struct engine_log_entry ring[LOG_CAP];
    static uint8_t out[CAP * ENGINE_MSG_MAX];
    struct icmp6_table t;
    struct icmp6_rule rules[N_RULES];
    uint64_t hits[N_RULES + 1] = {0}, types[256] = {0};
    struct engine_plan plan[N_RULES + 1];
    struct engine_verdict v[CAP];
    size_t n = 0;
    if (size == 0) {
        return 0;
    }
    memset(&e, 0, sizeof e);
    e.fd = -1;
    e.log = ring;
    e.log_cap = LOG_CAP;
    e.on_error.kind = (uint8_t)(data[0] % 3);
    e.on_error.value = 0x5;
    e.on_error.mask = 0xf;
    for (uint32_t i = 0; i <= N_RULES; i++) {
        plan[i].kind = (uint8_t)((data[0] >> 2) + i) % 3;
        plan[i].log = (uint8_t)((data[0] >> (4 + i)) & 1);
        plan[i].value = 0x10u << i;
        plan[i].mask = 0xf0;
    }
    build(&t, rules, hits, types);
    uint32_t n_plan = data[0] & 0x80 ? N_RULES : N_RULES + 1;  /* short plan: index out of it */
    uint32_t judged = engine_judge_datagram(&e, &t, plan, n_plan, data + 1, size - 1, v, &n, CAP);
    CHECK(judged == n && e.c.packets == n);
    CHECK(e.c.accept + e.c.drop + e.c.mark <= e.c.packets);
    CHECK(e.log_count <= LOG_CAP);
    for (size_t i = 0; i < n; i++) {
        CHECK(v[i].verdict <= 1 && v[i].set_mark <= 1);
        CHECK(!v[i].set_mark || v[i].verdict == 1);
    }
    size_t len = engine_encode_verdicts(v, n, 7, out, sizeof out);
    CHECK((n == 0) == (len == 0));
    replay(v, n, out, len);
    struct engine_packet p;
    int st = engine_parse_packet(data + 1, size - 1, &p);
    CHECK(st >= ENGINE_PKT_OK && st <= ENGINE_PKT_MALFORMED);
    CHECK(st != ENGINE_PKT_OK || (p.payload != NULL && p.payload + p.payload_len <= data + size));
    while (engine_log_take(&e) != NULL) {
    }
    CHECK(e.log_count == 0);
    return 0;
}
