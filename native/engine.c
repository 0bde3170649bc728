/* SPDX-License-Identifier: MIT */
/* engine.c - the batched NFQUEUE loop: recvmmsg -> parse -> classify -> batched verdicts.
 *
 * Invariants (see engine.h): exactly one verdict per packet message that has
 * an id; batch verdicts only over contiguous, in-order runs; no allocation;
 * every read of a received message goes through an index checked against the
 * message length. Netlink wire formats are from <linux/netfilter/nfnetlink_queue.h>,
 * written out here so the header stays cdef-clean.
 */
#define _GNU_SOURCE
#include "strict.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "engine.h"

enum {
    NLMSG_HDR = 16,              /* struct nlmsghdr */
    NFGEN_HDR = 4,               /* struct nfgenmsg */
    NL_ERROR = 2,                /* NLMSG_ERROR */
    NFQ_PACKET = (3 << 8) | 0,   /* NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET */
    NFQ_VERDICT = (3 << 8) | 1,
    NFQ_VERDICT_BATCH = (3 << 8) | 3,
    NFQA_PACKET_HDR = 1,
    NFQA_VERDICT_HDR = 2,
    NFQA_MARK = 3,
    NFQA_IFINDEX_INDEV = 5,
    NFQA_IFINDEX_OUTDEV = 6,
    NFQA_PAYLOAD = 10,
    NLA_TYPE_MASK = 0x3fff,      /* drops NLA_F_NESTED / NLA_F_NET_BYTEORDER */
    NLM_F_REQUEST = 1,
    NF_DROP = 0,
    NF_ACCEPT = 1,
    SEND_TRIES = 4
};

/* contract: host-order u16 / u32 at p (netlink headers are host order). */
static uint16_t rd16(const uint8_t *p) { uint16_t x; memcpy(&x, p, 2); return x; }
static uint32_t rd32(const uint8_t *p) { uint32_t x; memcpy(&x, p, 4); return x; }
/* contract: big-endian u32 at p (netfilter attribute payloads). */
static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}
static void wr16(uint8_t *p, uint16_t x) { memcpy(p, &x, 2); }
static void wr32(uint8_t *p, uint32_t x) { memcpy(p, &x, 4); }
static void wbe32(uint8_t *p, uint32_t x)
{
    p[0] = (uint8_t)(x >> 24); p[1] = (uint8_t)(x >> 16); p[2] = (uint8_t)(x >> 8); p[3] = (uint8_t)x;
}
static size_t align4(size_t x) { return (x + 3u) & ~(size_t)3u; }

int engine_parse_packet(const uint8_t *msg, size_t len, struct engine_packet *out)
{
    if (out == NULL || msg == NULL || len < NLMSG_HDR) {
        return ENGINE_PKT_NO_ID;
    }
    memset(out, 0, sizeof *out);
    if (rd16(msg + 4) != NFQ_PACKET) {
        return ENGINE_PKT_NOT_PACKET;
    }
    if (len < NLMSG_HDR + NFGEN_HDR) {
        return ENGINE_PKT_NO_ID;
    }
    int have_id = 0, broken = 0;
    size_t off = NLMSG_HDR + NFGEN_HDR;
    while (off + 4 <= len) {
        size_t alen = rd16(msg + off);
        uint32_t type = rd16(msg + off + 2) & NLA_TYPE_MASK;
        if (alen < 4 || alen > len - off) {
            broken = 1;
            break;
        }
        const uint8_t *d = msg + off + 4;
        size_t dlen = alen - 4;
        if (type == NFQA_PACKET_HDR && dlen >= 7) {
            out->id = be32(d);
            out->hook = d[6];
            have_id = 1;
        } else if (type == NFQA_MARK && dlen >= 4) {
            out->mark = be32(d);
        } else if (type == NFQA_IFINDEX_INDEV && dlen >= 4) {
            out->indev = be32(d);
        } else if (type == NFQA_IFINDEX_OUTDEV && dlen >= 4) {
            out->outdev = be32(d);
        } else if (type == NFQA_PAYLOAD) {
            out->payload = d;
            out->payload_len = dlen;
        }
        off += align4(alen);
    }
    if (!have_id) {
        return ENGINE_PKT_NO_ID;
    }
    return broken || out->payload == NULL ? ENGINE_PKT_MALFORMED : ENGINE_PKT_OK;
}

/* contract: the verdict plan p gives a packet whose current mark is old. */
static void apply_plan(const struct engine_plan *p, uint32_t id, uint32_t old,
                       struct engine_verdict *v)
{
    v->id = id;
    v->verdict = p->kind == ENGINE_DROP ? NF_DROP : NF_ACCEPT;
    v->set_mark = p->kind == ENGINE_MARK;
    v->mark = v->set_mark ? (old & ~p->mask) | (p->value & p->mask) : 0;
}

/* contract: copy a logged decision into the ring, or count it as dropped. */
static void log_push(struct engine *e, uint32_t rule, const struct engine_packet *p)
{
    if (e->log == NULL || e->log_cap == 0 || e->log_count >= e->log_cap) {
        e->c.log_dropped++;
        return;
    }
    struct engine_log_entry *l = &e->log[(e->log_head + e->log_count) % e->log_cap];
    size_t n = p->payload_len < ENGINE_LOG_SNAP ? p->payload_len : ENGINE_LOG_SNAP;
    l->rule = rule;
    l->hook = p->hook;
    l->indev = p->indev;
    l->outdev = p->outdev;
    l->len = (uint32_t)n;
    if (n > 0) {
        memcpy(l->data, p->payload, n);
    }
    e->log_count++;
}

/* contract: decide one parsed packet message into *v; counts it. */
static void judge(struct engine *e, const struct icmp6_table *t, const struct engine_plan *plan,
                  uint32_t n_plan, int status, const struct engine_packet *p,
                  struct engine_verdict *v)
{
    e->c.packets++;
    if (status == ENGINE_PKT_OK && t != NULL && plan != NULL) {
        uint32_t idx = icmp6_classify(t, p->payload, p->payload_len, p->hook, p->indev,
                                      p->outdev, &e->scratch);
        if (idx < n_plan && plan[idx].kind <= ENGINE_MARK) {
            apply_plan(&plan[idx], p->id, p->mark, v);
            e->c.accept += plan[idx].kind == ENGINE_ACCEPT;
            e->c.drop += plan[idx].kind == ENGINE_DROP;
            e->c.mark += plan[idx].kind == ENGINE_MARK;
            if (plan[idx].log) {
                log_push(e, idx, p);
            }
            return;
        }
    }
    e->c.errors++;
    apply_plan(&e->on_error, p->id, p->mark, v);
}

size_t engine_encode_verdicts(const struct engine_verdict *v, size_t n,
                              uint16_t queue_num, uint8_t *out, size_t cap)
{
    if (v == NULL || out == NULL || n > cap / ENGINE_MSG_MAX) {
        return 0;
    }
    size_t pos = 0, i = 0;
    while (i < n) {
        size_t j = i + 1;  /* extend the run while ids are consecutive and verdicts equal */
        while (j < n && v[j].id == v[j - 1].id + 1u && v[j].verdict == v[i].verdict
               && v[j].set_mark == v[i].set_mark && v[j].mark == v[i].mark) {
            j++;
        }
        /* The kernel answers a batch by dequeuing from the head of its queue
         * every id not after the batch id (modulo 2^32). Ids from the kernel
         * only grow, so that is exactly this run; should any later verdict in
         * this buffer not be after it, send singles instead. */
        for (size_t k = j; k < n && j - i > 1; k++) {
            if ((int32_t)(v[k].id - v[j - 1].id) <= 0) {
                j = i + 1;
            }
        }
        const struct engine_verdict *last = &v[j - 1];
        size_t mlen = NLMSG_HDR + NFGEN_HDR + 12u + (last->set_mark ? 8u : 0u);
        uint8_t *m = out + pos;
        memset(m, 0, mlen);
        wr32(m, (uint32_t)mlen);
        wr16(m + 4, (uint16_t)(j - i > 1 ? NFQ_VERDICT_BATCH : NFQ_VERDICT));
        wr16(m + 6, NLM_F_REQUEST);
        m[17] = 0;  /* nfgenmsg: family AF_UNSPEC (m[16]), version 0, res_id big-endian */
        m[18] = (uint8_t)(queue_num >> 8);
        m[19] = (uint8_t)queue_num;
        wr16(m + 20, 12);
        wr16(m + 22, NFQA_VERDICT_HDR);
        wbe32(m + 24, last->verdict);
        wbe32(m + 28, last->id);
        if (last->set_mark) {
            wr16(m + 32, 8);
            wr16(m + 34, NFQA_MARK);
            wbe32(m + 36, last->mark);
        }
        pos += mlen;
        i = j;
    }
    return pos;
}

/* contract: send len octets in one send(), retrying transient errors; 0 on success. */
static int send_all(struct engine *e, const uint8_t *buf, size_t len)
{
    for (int tries = 0; tries < SEND_TRIES; tries++) {
        e->c.send_calls++;
        ssize_t r = send(e->fd, buf, len, 0);
        if (r == (ssize_t)len) {
            size_t i = 0;
            while (i < len) {  /* count messages: the batching ratio */
                e->c.verdict_msgs++;
                i += rd32(buf + i);
            }
            return 0;
        }
        if (r >= 0 || (errno != EINTR && errno != ENOBUFS && errno != EAGAIN && errno != ENOMEM)) {
            break;
        }
    }
    e->c.send_errors++;
    return -1;
}

/* contract: deliver the n buffered verdicts; *n becomes 0.
 * A batch verdict answers every queued id up to its own, so it is safe only
 * while every earlier id has been answered. If a send fails, the verdicts are
 * sent again one message each; a verdict even that cannot deliver leaves its
 * packet waiting, and from then on no batch is ever sent (c.no_batch), so no
 * later batch can answer that packet with another packet's verdict. */
static void flush(struct engine *e, struct engine_verdict *v, size_t *n)
{
    uint8_t buf[ENGINE_VERDICT_MAX * ENGINE_MSG_MAX];
    if (*n == 0) {
        return;
    }
    size_t len = 0;
    if (!e->c.no_batch) {
        len = engine_encode_verdicts(v, *n, e->queue_num, buf, sizeof buf);
    } else {
        for (size_t i = 0; i < *n; i++) {  /* one message per verdict, still one send() */
            size_t m = engine_encode_verdicts(&v[i], 1, e->queue_num, buf + len, sizeof buf - len);
            if (m == 0) {
                len = 0;
                break;
            }
            len += m;
        }
    }
    if (len != 0 && send_all(e, buf, len) == 0) {
        *n = 0;
        return;
    }
    for (size_t i = 0; i < *n; i++) {  /* the whole send failed: each verdict on its own */
        size_t one = engine_encode_verdicts(&v[i], 1, e->queue_num, buf, sizeof buf);
        if (one == 0 || send_all(e, buf, one) != 0) {
            e->c.verdicts_lost++;
            e->c.no_batch = 1;
        }
    }
    *n = 0;
}

uint32_t engine_judge_datagram(struct engine *e, const struct icmp6_table *t,
                               const struct engine_plan *plan, uint32_t n_plan,
                               const uint8_t *buf, size_t len,
                               struct engine_verdict *v, size_t *n, size_t cap)
{
    uint32_t judged = 0;
    if (e == NULL || buf == NULL || v == NULL || n == NULL || cap == 0) {
        return 0;
    }
    size_t off = 0;
    while (len - off >= NLMSG_HDR) {
        size_t mlen = rd32(buf + off);
        int cut = mlen < NLMSG_HDR || mlen > len - off;
        size_t avail = cut ? len - off : mlen;
        struct engine_packet p;
        int status = engine_parse_packet(buf + off, avail, &p);
        if (rd16(buf + off + 4) == NL_ERROR) {
            e->c.nl_errors++;
        } else if (status == ENGINE_PKT_NO_ID) {
            e->c.errors++;  /* nothing to answer: no id to give a verdict to */
            e->c.no_batch = 1;  /* ...so no later batch may sweep that packet up */
        } else if (status != ENGINE_PKT_NOT_PACKET) {
            if (*n >= cap) {
                flush(e, v, n);
            }
            judge(e, t, plan, n_plan, cut ? ENGINE_PKT_MALFORMED : status, &p, &v[*n]);
            (*n)++;
            judged++;
        }
        if (cut) {
            break;
        }
        off += align4(mlen);
        if (off >= len) {
            break;
        }
    }
    return judged;
}

int64_t engine_pump(struct engine *e, const struct icmp6_table *t,
                    const struct engine_plan *plan, uint32_t n_plan, uint32_t budget)
{
    struct mmsghdr mm[ENGINE_BATCH_MAX];
    struct iovec iov[ENGINE_BATCH_MAX];
    struct engine_verdict v[ENGINE_VERDICT_MAX];
    size_t nv = 0;
    uint64_t done = 0;
    uint32_t spins = 0;
    if (e == NULL || e->rx == NULL || e->slot_size < NLMSG_HDR) {
        return -EINVAL;
    }
    struct timespec ts;
    if (t != NULL && t->fate != NULL && clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
        t->fate->now = (uint32_t)ts.tv_sec;  /* the fate table's clock: once per pump */
    }
    while (done < budget && spins++ <= budget) {
        uint64_t left = budget - done;
        unsigned int want = left < ENGINE_BATCH_MAX ? (unsigned int)left : ENGINE_BATCH_MAX;
        memset(mm, 0, sizeof mm[0] * want);
        for (unsigned int i = 0; i < want; i++) {
            iov[i].iov_base = e->rx + (size_t)i * e->slot_size;
            iov[i].iov_len = e->slot_size;
            mm[i].msg_hdr.msg_iov = &iov[i];
            mm[i].msg_hdr.msg_iovlen = 1;
        }
        e->c.recv_calls++;
        int r = recvmmsg(e->fd, mm, want, MSG_DONTWAIT, NULL);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == ENOBUFS) {
                e->c.enobufs++;
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            int err = errno;
            flush(e, v, &nv);
            return -(int64_t)err;
        }
        for (int i = 0; i < r; i++) {
            size_t got = mm[i].msg_len < e->slot_size ? mm[i].msg_len : e->slot_size;
            done += engine_judge_datagram(e, t, plan, n_plan, (const uint8_t *)iov[i].iov_base,
                                          got, v, &nv, ENGINE_VERDICT_MAX);
        }
        flush(e, v, &nv);
        if (r < (int)want) {
            break;  /* the socket is drained: skip the recvmmsg that would say EAGAIN */
        }
    }
    flush(e, v, &nv);
    return (int64_t)done;
}

const struct engine_log_entry *engine_log_take(struct engine *e)
{
    if (e == NULL || e->log == NULL || e->log_cap == 0 || e->log_count == 0) {
        return NULL;
    }
    const struct engine_log_entry *l = &e->log[e->log_head % e->log_cap];
    e->log_head = (e->log_head + 1) % e->log_cap;
    e->log_count--;
    return l;
}
