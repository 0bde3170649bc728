/* SPDX-License-Identifier: MIT */
/* engine.h - the batched NFQUEUE engine: the whole per-packet loop in C.
 *
 * One call, engine_pump(), receives many nfnetlink_queue messages per system
 * call (recvmmsg), parses each packet, walks the compiled rule table
 * (icmp6_classify) and sends the verdicts of the whole batch in one send():
 * a run of consecutive packet ids with the same verdict and mark becomes one
 * NFQNL_MSG_VERDICT_BATCH, anything else one NFQNL_MSG_VERDICT each.
 *
 * Invariants:
 *  - every packet message carrying a packet id gets exactly one verdict: the
 *    plan's, or e->on_error when the message or the table cannot judge it;
 *  - a batch verdict covers only a contiguous run of ids received in order,
 *    all earlier ids having been given their verdicts earlier in the buffer;
 *  - no allocation: the caller owns every buffer (engine, rx slots, log ring),
 *    everything per call lives on the stack; every read is bounds-checked.
 * Like icmp6.h this file is also cffi cdef input ('#' lines dropped).
 */
#ifndef ICMP6_SHIM_ENGINE_H
#define ICMP6_SHIM_ENGINE_H

#include <stdint.h>
#include <stddef.h>
#include "icmp6.h"

enum {
    ENGINE_BATCH_MAX = 64,       /* datagrams per recvmmsg */
    ENGINE_VERDICT_MAX = 256,    /* verdicts buffered before a send */
    ENGINE_MSG_MAX = 40,         /* octets of one encoded verdict message */
    ENGINE_LOG_SNAP = 1280,      /* octets of a logged packet kept for Python */
    ENGINE_ACCEPT = 0,           /* plan kinds: shim.core.model.PlanKind */
    ENGINE_DROP = 1,
    ENGINE_MARK = 2,
    ENGINE_PKT_OK = 0,           /* engine_parse_packet statuses */
    ENGINE_PKT_NOT_PACKET = 1,   /* not an NFQNL_MSG_PACKET message */
    ENGINE_PKT_NO_ID = 2,        /* no usable packet header: nothing to answer */
    ENGINE_PKT_MALFORMED = 3     /* has an id, but attributes or payload are broken */
};

/* The verdict of one decision (rule index), and the fallback on_error. */
struct engine_plan {
    uint8_t kind;                /* ENGINE_ACCEPT / ENGINE_DROP / ENGINE_MARK */
    uint8_t log;                 /* 1: copy the packet to the log ring */
    uint32_t value;              /* MARK: mark = (old & ~mask) | (value & mask) */
    uint32_t mask;
};

/* One packet message, as parsed (payload points into the message). */
struct engine_packet {
    uint32_t id;
    uint32_t hook;
    uint32_t mark;
    uint32_t indev;
    uint32_t outdev;
    const uint8_t *payload;
    size_t payload_len;
};

/* One verdict to send. verdict is NF_DROP (0) or NF_ACCEPT (1). */
struct engine_verdict {
    uint32_t id;
    uint32_t verdict;
    uint32_t mark;
    uint32_t set_mark;           /* 1: send NFQA_MARK */
};

struct engine_log_entry {
    uint32_t rule;               /* decision index */
    uint32_t hook;
    uint32_t indev;
    uint32_t outdev;
    uint32_t len;                /* octets in data (<= ENGINE_LOG_SNAP) */
    uint8_t data[ENGINE_LOG_SNAP];
};

struct engine_counters {
    uint64_t packets;            /* packet messages with an id (= verdicts owed) */
    uint64_t accept;
    uint64_t drop;
    uint64_t mark;
    uint64_t errors;             /* judged with on_error, or message without id */
    uint64_t enobufs;            /* recvmmsg said ENOBUFS: the kernel lost messages */
    uint64_t recv_calls;
    uint64_t send_calls;
    uint64_t verdict_msgs;       /* netlink verdict messages sent */
    uint64_t send_errors;        /* send() failed after retries */
    uint64_t nl_errors;          /* NLMSG_ERROR replies (a verdict the kernel refused) */
    uint64_t log_dropped;        /* logged decisions the full ring could not hold */
    uint64_t verdicts_lost;      /* verdicts no send delivered: their packets wait in the queue */
    uint64_t no_batch;           /* 1 once an id may be unanswered: batches are off for good */
};

struct engine {
    int fd;                      /* the queue's netlink socket */
    uint16_t queue_num;
    struct engine_plan on_error;
    uint8_t *rx;                 /* ENGINE_BATCH_MAX slots of slot_size octets */
    size_t slot_size;
    struct engine_log_entry *log;  /* ring of log_cap entries (NULL: no logging) */
    uint32_t log_cap;
    uint32_t log_head;           /* oldest entry */
    uint32_t log_count;
    struct engine_counters c;
    struct icmp6_view scratch;
};

/* contract: parse the netlink message msg[0..len) as an NFQNL_MSG_PACKET into
 * *out; returns an ENGINE_PKT_* status (out->id is valid for OK/MALFORMED). */
int engine_parse_packet(const uint8_t *msg, size_t len, struct engine_packet *out);

/* contract: judge every netlink message of one datagram, appending at most
 * cap - *n verdicts to v (the caller flushes before cap is near); returns the
 * number of packet messages that got a verdict. */
uint32_t engine_judge_datagram(struct engine *e, const struct icmp6_table *t,
                               const struct engine_plan *plan, uint32_t n_plan,
                               const uint8_t *buf, size_t len,
                               struct engine_verdict *v, size_t *n, size_t cap);

/* contract: encode n verdicts as netlink messages into out[0..cap), merging
 * runs of consecutive ids with equal verdict and mark into one batch verdict;
 * returns octets written (0 if cap < n * ENGINE_MSG_MAX). */
size_t engine_encode_verdicts(const struct engine_verdict *v, size_t n,
                              uint16_t queue_num, uint8_t *out, size_t cap);

/* contract: receive, judge and answer up to budget packets without blocking;
 * returns how many were judged, or -errno on a socket error other than
 * EAGAIN/EINTR/ENOBUFS (verdicts owed so far are sent first). */
int64_t engine_pump(struct engine *e, const struct icmp6_table *t,
                    const struct engine_plan *plan, uint32_t n_plan, uint32_t budget);

/* contract: the oldest log entry, removed from the ring, or NULL when empty;
 * valid until the next engine_pump. */
const struct engine_log_entry *engine_log_take(struct engine *e);

#endif /* ICMP6_SHIM_ENGINE_H */
