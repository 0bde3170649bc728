/* SPDX-License-Identifier: MIT */
/* icmp6.h - the C contract of icmp6-shim, and the cffi cdef source.
 *
 * Two entry points, both pure functions over caller-owned memory:
 *   icmp6_parse()    bytes (octet 0 = IPv6 header) -> struct icmp6_view
 *   icmp6_classify() bytes + packet meta + compiled rule table -> rule index
 * No allocation, no globals, every read bounds-checked.
 * build_icmp6.py feeds this file to cffi's cdef after dropping '#' lines, so
 * it must stay within what cdef understands: no macros with bodies, no
 * includes other than the two below; the include guard is '#' lines only.
 */
#ifndef ICMP6_SHIM_ICMP6_H
#define ICMP6_SHIM_ICMP6_H

#include <stdint.h>
#include <stddef.h>

enum {
    ICMP6_EXT_MAX = 64,          /* capacity of view.ext; ext_limit is clamped to it */
    ICMP6_MCAST_SCOPE_NONE = 255 /* src/dst_mcast_scope of a non-multicast address */
};

/* Address classes (RFC 4291). Also bit positions in rule class masks. */
enum icmp6_addr_class {
    ICMP6_ADDR_UNSPECIFIED = 0,
    ICMP6_ADDR_LOOPBACK = 1,
    ICMP6_ADDR_IPV4_MAPPED = 2,
    ICMP6_ADDR_LINK_LOCAL = 3,
    ICMP6_ADDR_UNIQUE_LOCAL = 4,
    ICMP6_ADDR_MULTICAST = 5,
    ICMP6_ADDR_SOLICITED_NODE = 6,  /* exactly ff02::1:ff00:0/104 */
    ICMP6_ADDR_GLOBAL_UNICAST = 7,
    ICMP6_ADDR_ABSENT = 8           /* no complete IPv6 header to read it from */
};

/* Fragment status; also bit positions in rule frag masks. */
enum icmp6_frag_status {
    ICMP6_FRAG_NONE = 0,
    ICMP6_FRAG_ATOMIC = 1,     /* fragment header, offset 0, M=0 (RFC 6946) */
    ICMP6_FRAG_FIRST = 2,      /* offset 0, M=1 */
    ICMP6_FRAG_NON_FIRST = 3   /* offset > 0: carries no headers to read */
};

/* view.malformed bits */
enum icmp6_malformed {
    ICMP6_MAL_BAD_VERSION = 1,
    ICMP6_MAL_TRUNCATED_IPV6_HEADER = 2,
    ICMP6_MAL_PAYLOAD_LENGTH_MISMATCH = 4,
    ICMP6_MAL_EXT_HEADER_OVERRUN = 8,
    ICMP6_MAL_ICMPV6_HEADER_TRUNCATED = 16,
    ICMP6_MAL_TOO_MANY_EXT_HEADERS = 32
};

/* view.nd_failed bits: which RFC 4861 validity check failed */
enum icmp6_nd_check {
    ICMP6_ND_HOP_LIMIT = 1,          /* IP hop limit != 255 */
    ICMP6_ND_CODE = 2,               /* ICMP code != 0 */
    ICMP6_ND_LENGTH = 4,             /* ICMP length below the message minimum */
    ICMP6_ND_TARGET_MULTICAST = 8,   /* NS/NA target (or Redirect destination) is multicast */
    ICMP6_ND_SOURCE_NOT_LINK_LOCAL = 16, /* RA/Redirect source not link-local */
    ICMP6_ND_DAD_DESTINATION = 32,   /* NS from :: not sent to a solicited-node address */
    ICMP6_ND_DAD_SLLA = 64,          /* NS or RS from :: carries a source link-layer option */
    ICMP6_ND_OPTION_LENGTH = 128,    /* an option has length 0 or overruns the message */
    ICMP6_ND_NA_SOLICITED_MULTICAST = 256, /* NA to multicast with the S flag set */
    ICMP6_ND_REDIRECT_TARGET = 512   /* Redirect target neither link-local nor the destination */
};

/* Netfilter hooks, numbered as NF_INET_*; also bit positions in rule hook masks. */
enum icmp6_hook {
    ICMP6_HOOK_PREROUTING = 0,
    ICMP6_HOOK_INPUT = 1,
    ICMP6_HOOK_FORWARD = 2,
    ICMP6_HOOK_OUTPUT = 3,
    ICMP6_HOOK_POSTROUTING = 4
};

/* The draft's role and IKE-use attributes, as bits (table.type_role / type_ike). */
enum icmp6_role {
    ICMP6_ROLE_LINK_LOCAL = 1,
    ICMP6_ROLE_END_TO_END = 2,
    ICMP6_ROLE_ANY_TO_END = 4,
    ICMP6_ROLE_UNCLASSIFIED = 8   /* not in the draft's table, or no ICMPv6 type */
};
enum icmp6_ike {
    ICMP6_IKE_MUST_NOT = 1,
    ICMP6_IKE_SHOULD_NOT = 2,
    ICMP6_IKE_MAY = 4,
    ICMP6_IKE_UNCLASSIFIED = 8
};

struct icmp6_view {
    /* IPv6 header */
    uint8_t version;
    uint8_t hop_limit;
    uint16_t payload_length;
    uint8_t src[16];
    uint8_t dst[16];
    uint8_t src_class;             /* enum icmp6_addr_class */
    uint8_t dst_class;
    uint8_t src_mcast_scope;       /* 4-bit scope, or ICMP6_MCAST_SCOPE_NONE */
    uint8_t dst_mcast_scope;
    /* extension header chain */
    uint8_t n_ext;                 /* headers completely present and walked */
    uint8_t ext[ICMP6_EXT_MAX];    /* their Next Header values, in order */
    int16_t upper_layer;           /* Next Header value that ended the walk, -1 if none */
    uint16_t upper_layer_offset;   /* octet offset of that header from octet 0 */
    uint8_t chain_complete;        /* whole chain incl. upper-layer header present */
    /* fragment header */
    uint8_t frag_status;           /* enum icmp6_frag_status */
    uint8_t frag_more;
    uint16_t frag_offset;          /* in octets */
    uint32_t frag_id;
    int16_t frag_next;             /* Next Header field of that Fragment header, -1 if none */
    /* ICMPv6 */
    int16_t icmpv6_type;           /* -1 unless the 4-octet ICMPv6 header is present */
    int16_t icmpv6_code;
    uint32_t icmpv6_length;        /* octets of the ICMPv6 message present in the buffer */
    int8_t nd_valid;               /* -1 not an ND message, 0 invalid, 1 valid */
    uint32_t nd_failed;            /* enum icmp6_nd_check bits */
    int64_t mtu;                   /* Packet Too Big MTU, -1 otherwise */
    uint32_t malformed;            /* enum icmp6_malformed bits */
};

/* A compiled rule. A field not constrained by the rule is encoded as its full
 * range (all bits set, 0..max), so the walk is branch-light; `need` says which
 * fields a packet must HAVE (a type, a code, an MTU, an ND verdict) to match. */
enum icmp6_need {
    ICMP6_NEED_TYPE = 1,     /* packet must have icmpv6_type and it must be in types[] */
    ICMP6_NEED_CODE = 2,     /* packet must have icmpv6_code and it must be in codes[] */
    ICMP6_NEED_MTU = 4,      /* packet must carry an MTU within mtu_min..mtu_max */
    ICMP6_NEED_ND = 8        /* packet must have nd_valid == rule.nd_valid */
};

struct icmp6_rule {
    uint64_t types[4];           /* bit t set: type t matches */
    uint64_t codes[4];
    uint32_t need;               /* enum icmp6_need bits */
    uint8_t hooks;               /* bit per enum icmp6_hook */
    uint8_t roles;               /* enum icmp6_role bits */
    uint8_t ike;                 /* enum icmp6_ike bits */
    uint8_t frag;                /* bit per enum icmp6_frag_status */
    uint16_t src_classes;        /* bit per enum icmp6_addr_class */
    uint16_t dst_classes;
    uint8_t src_prefix[16];
    uint8_t src_plen;            /* 0 = any */
    uint8_t dst_prefix[16];
    uint8_t dst_plen;
    uint8_t hop_min;
    uint8_t hop_max;
    int8_t chain_complete;       /* -1 any, 0 or 1 */
    int8_t malformed;            /* -1 any, 0 = no malformed bits, 1 = some */
    int8_t nd_valid;             /* with ICMP6_NEED_ND: 0 or 1 */
    uint32_t indev;              /* ifindex, 0 = any */
    uint32_t outdev;
    int64_t mtu_min;
    int64_t mtu_max;
};

/* What classify did with a fragment (icmp6_fate.last). */
enum icmp6_fate_how {
    ICMP6_FATE_NONE = 0,       /* not a fragment with a fate, or no fate table */
    ICMP6_FATE_STORED = 1,     /* a first fragment: its decision was remembered */
    ICMP6_FATE_FOLLOWED = 2,   /* a non-first fragment got its first fragment's decision */
    ICMP6_FATE_UNKNOWN = 3     /* a non-first fragment whose first fragment is not remembered */
};

/* One remembered datagram: the decision its first fragment got. */
struct icmp6_fate_entry {
    uint8_t src[16];
    uint8_t dst[16];
    uint32_t id;                 /* Fragment header Identification */
    uint32_t hook;               /* where the first fragment was judged */
    uint32_t indev;              /* and through which interfaces: a fragment that comes */
    uint32_t outdev;             /* another way is not that datagram's as far as we know */
    uint32_t decision;           /* what icmp6_classify returned for the first fragment */
    uint32_t stamp;              /* fate.now when stored */
    uint32_t used;               /* 1: the slot holds a datagram */
};

/* The fragment fate table: caller-owned, bounded, one slot per hash of
 * (src, dst, id, hook); a newer datagram overwrites an older one in its
 * slot. A non-first fragment whose datagram is remembered (same addresses,
 * id, hook and interfaces) gets the same decision (verdict and
 * mark) as its first fragment, without a rule walk; any other non-first
 * fragment is judged as before. Forgetting is safe: a datagram whose first
 * fragment was dropped cannot be reassembled whatever happens to the rest. */
struct icmp6_fate {
    struct icmp6_fate_entry *slots;
    uint32_t n_slots;            /* 0: nothing is remembered */
    uint32_t ttl;                /* seconds an entry is followed (reassembly gives up at 60) */
    uint32_t now;                /* the caller's clock in seconds, kept current by the caller */
    uint32_t seed;               /* hash key, so a sender cannot aim at another's slot */
    uint32_t last;               /* enum icmp6_fate_how of the last classify call */
    uint64_t stored;             /* first fragments remembered */
    uint64_t followed;           /* non-first fragments given their datagram's decision */
    uint64_t unknown;            /* non-first fragments of no remembered datagram */
};

/* The compiled classifier (classify.h); opaque here. */
struct icmp6_cls;

struct icmp6_table {
    uint32_t n_rules;
    const struct icmp6_rule *rules;  /* in evaluation order */
    uint8_t type_role[256];          /* enum icmp6_role bit of each ICMPv6 type */
    uint8_t type_ike[256];           /* enum icmp6_ike bit of each ICMPv6 type */
    uint32_t ext_limit;              /* passed on to icmp6_parse */
    uint64_t *hits;                  /* n_rules + 1 counters (+ 2 with non_icmpv6);
                                        [n_rules] = no match, [n_rules + 1] = non-ICMPv6 */
    uint64_t *type_hits;             /* 256 counters by ICMPv6 type, or NULL */
    /* Optional per-type candidates, so a packet visits only rules that can match
     * its type: cand[cand_off[k] .. cand_off[k+1]) lists, in evaluation order,
     * the rules a packet of ICMPv6 type k can match (k = 256: no type). NULL:
     * every rule is walked. Same result either way; icmp6_index_candidates()
     * builds them. */
    const uint32_t *cand_off;        /* 258 offsets into cand */
    const uint32_t *cand;
    uint32_t n_cand;                 /* entries in cand */
    /* 1: a packet icmp6_is_non_icmpv6() calls other traffic gets index
     * n_rules + 1 without a rule walk (rules are written for ICMPv6). */
    uint32_t non_icmpv6;
    struct icmp6_fate *fate;         /* NULL: every fragment is walked like any packet */
    /* Optional compiled classifier built from these rules (icmp6_cls_build):
     * the first match without walking the rules. NULL: the walk. Same result. */
    const struct icmp6_cls *cls;
};

/* contract: parse buf[0..len) as an IPv6 packet into *out; never reads outside
 * buf, never fails; returns 0, or -1 only if out is NULL. ext_limit is clamped
 * to 1..ICMP6_EXT_MAX. */
int icmp6_parse(const uint8_t *buf, size_t len, uint32_t ext_limit,
                struct icmp6_view *out);

/* contract: fill *r as the rule that matches every packet: all zero, then each
 * constrained field at its full range (every type, code, hook, role, IKE use,
 * fragment status and address class; hop limit 0..255; chain_complete and
 * malformed -1) and need 0, so no field is required. The one place this
 * encoding is written; shim.core.model.NativeRule's defaults mirror it
 * (tests/bindings/test_icmp6.py compares the two). */
void icmp6_rule_any(struct icmp6_rule *r);

/* contract: does rule r match view v seen at hook with these devices? 1/0. */
int icmp6_rule_matches(const struct icmp6_table *t, const struct icmp6_rule *r,
                       const struct icmp6_view *v, uint32_t hook,
                       uint32_t indev, uint32_t outdev);

/* contract: fill cand_off[258] and cand[cap] for t's rules (types[] and
 * ICMP6_NEED_TYPE decide); returns the entries written, or 0 if cap is too
 * small (then leave t->cand NULL). Counts: at most 257 * n_rules entries. */
uint32_t icmp6_index_candidates(const struct icmp6_table *t, uint32_t *cand_off,
                                uint32_t *cand, uint32_t cap);

/* contract: the first rule of t matching v at hook with these devices, or
 * t->n_rules: the plain walk (over t->cand when present), the reference the
 * compiled classifier (t->cls) is checked against. */
uint32_t icmp6_walk(const struct icmp6_table *t, const struct icmp6_view *v, uint32_t hook,
                    uint32_t indev, uint32_t outdev);

/* contract: 1 iff v is complete, well-formed traffic that is not ICMPv6:
 * not malformed and either (a) its whole chain up to an upper layer other
 * than ICMPv6 is present, or (b) a non-first fragment whose Fragment header
 * names a protocol other than ICMPv6 that is not an extension header. */
int icmp6_is_non_icmpv6(const struct icmp6_view *v);

/* contract: parse buf into *scratch; a non-first fragment of a datagram in
 * t->fate gets its first fragment's index; else, with t->non_icmpv6, other
 * traffic gets n_rules + 1; else the first matching rule of t->rules, found
 * by t->cls when present, else by icmp6_walk. A first fragment's
 * result is stored in t->fate. Count the hit in t->hits and the ICMPv6 type
 * in t->type_hits (each if non-NULL) and return the index: of the first
 * matching rule, t->n_rules when none matches, n_rules + 1 for non-ICMPv6. */
uint32_t icmp6_classify(const struct icmp6_table *t, const uint8_t *buf,
                        size_t len, uint32_t hook, uint32_t indev,
                        uint32_t outdev, struct icmp6_view *scratch);

#endif /* ICMP6_SHIM_ICMP6_H */
