/* SPDX-License-Identifier: MIT */
/* icmp6.c - IPv6 extension-header walk, ICMPv6 view and rule-table walk.
 *
 * Invariants: no allocation, no state outside the caller's structs, and
 * every read of buf goes through an index already checked against a bound
 * that is <= len. All functions are total: any bytes give a view.
 *
 * Decisions where the contract was open (mirrored in docs):
 *  - Walk bound: end = 40 + payload_length when that fits in len, else len
 *    (a packet cut by the NFQUEUE copy range is walked as far as it goes);
 *    either way 40 + payload_length != len sets PAYLOAD_LENGTH_MISMATCH.
 *  - Under 40 octets: TRUNCATED_IPV6_HEADER, plus BAD_VERSION when the first
 *    octet is present and its version is not 6; nothing else is read.
 *  - Version != 6 with a full header: header fields and classes are
 *    reported, BAD_VERSION is set, the chain is not walked.
 *  - Several Fragment headers: the last one walked gives the frag_* fields.
 *  - A non-first fragment ends the walk after its Fragment header:
 *    upper_layer -1, chain_complete 0, not malformed.
 *  - chain_complete needs the upper-layer header: ICMPv6 4 octets, TCP 20,
 *    UDP 8, anything else (ESP, No Next Header, unknown) 0 octets.
 *  - Running out of data inside the chain is not malformed in a first
 *    fragment (RFC 7112 makes that a policy matter); otherwise it is
 *    EXT_HEADER_OVERRUN (inside an extension header) or
 *    ICMPV6_HEADER_TRUNCATED (ICMPv6 with < 4 octets). A short TCP/UDP
 *    header only clears chain_complete.
 *  - frag_next is the Fragment header's own Next Header field: for a
 *    non-first fragment it names the first header of the fragmentable part.
 *  - ND checks are RFC 4861 only; fragmented ND (RFC 6980) is left to the
 *    rule frag mask. Checksum and AH are not verified. An option counts as
 *    carried as soon as its type and length octets are present.
 */
#include "strict.h"

#include "icmp6.h"
#include "classify.h"

#include <string.h>

enum {
    IPV6_HDR_LEN = 40,
    NH_HOPOPT = 0,
    NH_TCP = 6,
    NH_UDP = 17,
    NH_ROUTING = 43,
    NH_FRAGMENT = 44,
    NH_AH = 51,
    NH_ICMPV6 = 58,
    NH_DSTOPTS = 60,
    NH_MOBILITY = 135,
    NH_HIP = 139,
    NH_SHIM6 = 140,
    NH_EXP1 = 253,
    NH_EXP2 = 254,
    ND_OPT_SLLA = 1
};

/* contract: big-endian 16-bit read at p (caller checked 2 octets). */
static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)(((uint16_t)p[0] << 8) | p[1]);
}

/* contract: big-endian 32-bit read at p (caller checked 4 octets). */
static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* contract: 1 iff the first n octets of a are zero. */
static int all_zero(const uint8_t *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (a[i] != 0) {
            return 0;
        }
    }
    return 1;
}

/* contract: RFC 4291 class of the 16-octet address a. */
static uint8_t addr_class(const uint8_t *a)
{
    static const uint8_t solicited[13] = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff};
    if (all_zero(a, 15)) {
        if (a[15] == 0) {
            return ICMP6_ADDR_UNSPECIFIED;
        }
        if (a[15] == 1) {
            return ICMP6_ADDR_LOOPBACK;
        }
    }
    if (all_zero(a, 10) && a[10] == 0xff && a[11] == 0xff) {
        return ICMP6_ADDR_IPV4_MAPPED;
    }
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) {
        return ICMP6_ADDR_LINK_LOCAL;
    }
    if ((a[0] & 0xfe) == 0xfc) {
        return ICMP6_ADDR_UNIQUE_LOCAL;
    }
    if (memcmp(a, solicited, sizeof solicited) == 0) {
        return ICMP6_ADDR_SOLICITED_NODE;
    }
    if (a[0] == 0xff) {
        return ICMP6_ADDR_MULTICAST;
    }
    return ICMP6_ADDR_GLOBAL_UNICAST;
}

/* contract: multicast scope nibble of a, or ICMP6_MCAST_SCOPE_NONE. */
static uint8_t mcast_scope(const uint8_t *a)
{
    return a[0] == 0xff ? (uint8_t)(a[1] & 0x0f) : (uint8_t)ICMP6_MCAST_SCOPE_NONE;
}

/* contract: 1 iff nh is a Next Header value the walk steps over. */
static int is_ext_header(uint8_t nh)
{
    switch (nh) {
    case NH_HOPOPT:
    case NH_ROUTING:
    case NH_FRAGMENT:
    case NH_AH:
    case NH_DSTOPTS:
    case NH_MOBILITY:
    case NH_HIP:
    case NH_SHIM6:
    case NH_EXP1:
    case NH_EXP2:
        return 1;
    default:
        return 0;
    }
}

/* contract: octets the upper-layer header nh needs to count as present. */
static size_t upper_header_len(uint8_t nh)
{
    switch (nh) {
    case NH_ICMPV6:
        return 4;
    case NH_TCP:
        return 20;
    case NH_UDP:
        return 8;
    default:
        return 0;
    }
}

/* contract: record the Fragment header at f (8 octets checked) into out. */
static void read_fragment(const uint8_t *f, struct icmp6_view *out)
{
    /* The 13-bit offset sits above 3 flag bits, so masking them off leaves
     * offset * 8, i.e. octets. */
    uint16_t off_flags = be16(f + 2);
    out->frag_offset = (uint16_t)(off_flags & 0xfff8u);
    out->frag_more = (uint8_t)(off_flags & 1u);
    out->frag_id = be32(f + 4);
    out->frag_next = f[0];
    if (out->frag_offset > 0) {
        out->frag_status = ICMP6_FRAG_NON_FIRST;
    } else {
        out->frag_status = out->frag_more ? ICMP6_FRAG_FIRST : ICMP6_FRAG_ATOMIC;
    }
}

/* contract: ran out of data at the chain; flag it unless a first fragment. */
static void out_of_data(struct icmp6_view *out, uint32_t flag)
{
    if (out->frag_status != ICMP6_FRAG_FIRST) {
        out->malformed |= flag;
    }
}

/* contract: walk the chain from octet 40 to the upper layer within
 * buf[0..end); fill ext, upper_layer*, chain_complete, frag_*; return the
 * upper-layer offset or 0 when the walk did not reach one. */
static size_t walk_chain(const uint8_t *buf, size_t end, uint32_t ext_limit,
                         struct icmp6_view *out)
{
    size_t off = IPV6_HDR_LEN;
    uint8_t nh = buf[6];
    while (is_ext_header(nh)) {
        if (out->n_ext >= ext_limit) {
            out->malformed |= ICMP6_MAL_TOO_MANY_EXT_HEADERS;
            return 0;
        }
        size_t fixed = nh == NH_FRAGMENT ? 8 : 2;
        if (end - off < fixed) {
            out_of_data(out, ICMP6_MAL_EXT_HEADER_OVERRUN);
            return 0;
        }
        size_t hlen;
        if (nh == NH_FRAGMENT) {
            hlen = 8;
        } else if (nh == NH_AH) {
            hlen = ((size_t)buf[off + 1] + 2) * 4;
        } else {
            hlen = ((size_t)buf[off + 1] + 1) * 8;
        }
        if (end - off < hlen) {
            out_of_data(out, ICMP6_MAL_EXT_HEADER_OVERRUN);
            return 0;
        }
        out->ext[out->n_ext++] = nh;
        if (nh == NH_FRAGMENT) {
            read_fragment(buf + off, out);
            if (out->frag_status == ICMP6_FRAG_NON_FIRST) {
                return 0; /* what follows is the middle of some other header */
            }
        }
        nh = buf[off];
        off += hlen;
    }
    out->upper_layer = nh;
    out->upper_layer_offset = (uint16_t)off;
    out->chain_complete = (uint8_t)(end - off >= upper_header_len(nh));
    if (!out->chain_complete && nh == NH_ICMPV6) {
        out_of_data(out, ICMP6_MAL_ICMPV6_HEADER_TRUNCATED);
    }
    return off;
}

/* contract: fixed-part length of ND message type, 0 if not ND. */
static uint32_t nd_min_length(int type)
{
    switch (type) {
    case 133:
        return 8;
    case 134:
        return 16;
    case 135:
    case 136:
        return 24;
    case 137:
        return 40;
    default:
        return 0;
    }
}

/* contract: walk the ND options of m[fixed..n); return failure bits and set
 * *slla when a source link-layer address option is carried. */
static uint32_t nd_options(const uint8_t *m, uint32_t n, uint32_t fixed, int *slla)
{
    uint32_t off = fixed;
    *slla = 0;
    while (off < n) {
        if (n - off < 2) {
            return ICMP6_ND_OPTION_LENGTH;
        }
        if (m[off] == ND_OPT_SLLA) {
            *slla = 1;
        }
        uint32_t olen = (uint32_t)m[off + 1] * 8;
        if (olen == 0 || n - off < olen) {
            return ICMP6_ND_OPTION_LENGTH;
        }
        off += olen;
    }
    return 0;
}

/* contract: failure bits of the checks on fields inside the fixed part of
 * the ND message m (its whole fixed part is present). */
static uint32_t nd_field_checks(const uint8_t *m, const struct icmp6_view *v)
{
    int type = v->icmpv6_type;
    uint32_t failed = 0;
    if ((type == 135 || type == 136) && m[8] == 0xff) {
        failed |= ICMP6_ND_TARGET_MULTICAST;
    }
    int dst_mcast = v->dst_class == ICMP6_ADDR_MULTICAST ||
                    v->dst_class == ICMP6_ADDR_SOLICITED_NODE;
    if (type == 136 && dst_mcast && (m[4] & 0x40)) {
        failed |= ICMP6_ND_NA_SOLICITED_MULTICAST;
    }
    if (type == 137) {
        const uint8_t *target = m + 8;
        const uint8_t *dest = m + 24;
        if (dest[0] == 0xff) {
            failed |= ICMP6_ND_TARGET_MULTICAST;
        }
        if (addr_class(target) != ICMP6_ADDR_LINK_LOCAL && memcmp(target, dest, 16) != 0) {
            failed |= ICMP6_ND_REDIRECT_TARGET;
        }
    }
    return failed;
}

/* contract: RFC 4861 validity bits of the ND message m[0..n) (n >= 4) of
 * type 133..137 carried in the packet described by v. */
static uint32_t nd_checks(const uint8_t *m, uint32_t n, const struct icmp6_view *v)
{
    int type = v->icmpv6_type;
    uint32_t fixed = nd_min_length(type);
    uint32_t failed = 0;
    int slla = 0;
    if (v->hop_limit != 255) {
        failed |= ICMP6_ND_HOP_LIMIT;
    }
    if (v->icmpv6_code != 0) {
        failed |= ICMP6_ND_CODE;
    }
    if (n < fixed) {
        failed |= ICMP6_ND_LENGTH;  /* and no field or option can be checked */
    } else {
        failed |= nd_options(m, n, fixed, &slla) | nd_field_checks(m, v);
    }
    if ((type == 134 || type == 137) && v->src_class != ICMP6_ADDR_LINK_LOCAL) {
        failed |= ICMP6_ND_SOURCE_NOT_LINK_LOCAL;
    }
    int unspecified_src = v->src_class == ICMP6_ADDR_UNSPECIFIED;
    if (type == 135 && unspecified_src && v->dst_class != ICMP6_ADDR_SOLICITED_NODE) {
        failed |= ICMP6_ND_DAD_DESTINATION;
    }
    if ((type == 133 || type == 135) && unspecified_src && slla) {
        failed |= ICMP6_ND_DAD_SLLA;
    }
    return failed;
}

/* contract: fill the ICMPv6 fields of out from the message m[0..n). */
static void read_icmpv6(const uint8_t *m, uint32_t n, struct icmp6_view *out)
{
    out->icmpv6_length = n;
    if (n < 4) {
        return;
    }
    out->icmpv6_type = m[0];
    out->icmpv6_code = m[1];
    if (m[0] == 2 && n >= 8) {
        out->mtu = be32(m + 4);
    }
    if (nd_min_length(m[0]) != 0) {
        out->nd_failed = nd_checks(m, n, out);
        out->nd_valid = out->nd_failed == 0;
    }
}

/* contract: reset *out to "nothing known". */
static void view_init(struct icmp6_view *out)
{
    memset(out, 0, sizeof *out);
    out->src_class = ICMP6_ADDR_ABSENT;
    out->dst_class = ICMP6_ADDR_ABSENT;
    out->src_mcast_scope = ICMP6_MCAST_SCOPE_NONE;
    out->dst_mcast_scope = ICMP6_MCAST_SCOPE_NONE;
    out->upper_layer = -1;
    out->frag_status = ICMP6_FRAG_NONE;
    out->frag_next = -1;
    out->icmpv6_type = -1;
    out->icmpv6_code = -1;
    out->nd_valid = -1;
    out->mtu = -1;
}

/* contract: see icmp6.h. */
int icmp6_parse(const uint8_t *buf, size_t len, uint32_t ext_limit,
                struct icmp6_view *out)
{
    if (out == NULL) {
        return -1;
    }
    view_init(out);
    if (buf == NULL) {
        len = 0;
    }
    ext_limit = ext_limit < 1 ? 1 : ext_limit > ICMP6_EXT_MAX ? ICMP6_EXT_MAX : ext_limit;
    if (len >= 1) {
        out->version = (uint8_t)(buf[0] >> 4);
        if (out->version != 6) {
            out->malformed |= ICMP6_MAL_BAD_VERSION;
        }
    }
    if (len < IPV6_HDR_LEN) {
        out->malformed |= ICMP6_MAL_TRUNCATED_IPV6_HEADER;
        return 0;
    }
    out->payload_length = be16(buf + 4);
    out->hop_limit = buf[7];
    memcpy(out->src, buf + 8, 16);
    memcpy(out->dst, buf + 24, 16);
    out->src_class = addr_class(out->src);
    out->dst_class = addr_class(out->dst);
    out->src_mcast_scope = mcast_scope(out->src);
    out->dst_mcast_scope = mcast_scope(out->dst);
    if (out->version != 6) {
        return 0;
    }
    size_t end = len;
    if ((size_t)out->payload_length <= len - IPV6_HDR_LEN) {
        end = IPV6_HDR_LEN + (size_t)out->payload_length;
    }
    if ((size_t)out->payload_length != len - IPV6_HDR_LEN) {
        out->malformed |= ICMP6_MAL_PAYLOAD_LENGTH_MISMATCH;
    }
    size_t upper = walk_chain(buf, end, ext_limit, out);
    if (upper != 0 && out->upper_layer == NH_ICMPV6) {
        /* end - upper fits in 32 bits: upper >= 40 and end <= 40 + 65535. */
        read_icmpv6(buf + upper, (uint32_t)(end - upper), out);
    }
    return 0;
}

/* contract: 1 iff the first plen bits of addr equal those of prefix. */
static int prefix_matches(const uint8_t *addr, const uint8_t *prefix, uint8_t plen)
{
    unsigned bits = plen > 128 ? 128 : plen;
    unsigned whole = bits / 8;
    unsigned rest = bits % 8;
    if (memcmp(addr, prefix, whole) != 0) {
        return 0;
    }
    if (rest == 0) {
        return 1;
    }
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (addr[whole] & mask) == (prefix[whole] & mask);
}

/* contract: 1 iff v's address (class cls) is in the rule's class mask and prefix. */
static int addr_matches(const uint8_t *addr, uint8_t cls, uint16_t classes,
                        const uint8_t *prefix, uint8_t plen)
{
    if (!((1u << cls) & classes)) {
        return 0;
    }
    if (plen == 0) {
        return 1;
    }
    /* An absent address is unknown, so it cannot be inside any prefix. */
    return cls != ICMP6_ADDR_ABSENT && prefix_matches(addr, prefix, plen);
}

/* contract: 1 iff value is set in the 256-bit set, and -1 passes unless needed. */
static int set_matches(const uint64_t set[4], int value, int needed)
{
    if (value < 0) {
        return !needed;
    }
    return (int)((set[value >> 6] >> (value & 63)) & 1u);
}

/* contract: 1 iff the ICMPv6-derived fields of v other than type/code satisfy r. */
static int icmp_matches(const struct icmp6_table *t, const struct icmp6_rule *r,
                        const struct icmp6_view *v)
{
    int type = v->icmpv6_type;
    uint8_t role = type >= 0 ? t->type_role[type & 0xff] : (uint8_t)ICMP6_ROLE_UNCLASSIFIED;
    uint8_t ike = type >= 0 ? t->type_ike[type & 0xff] : (uint8_t)ICMP6_IKE_UNCLASSIFIED;
    if (!(role & r->roles) || !(ike & r->ike)) {
        return 0;
    }
    if ((r->need & ICMP6_NEED_ND) && (v->nd_valid < 0 || v->nd_valid != r->nd_valid)) {
        return 0;
    }
    if ((r->need & ICMP6_NEED_MTU) && (v->mtu < 0 || v->mtu < r->mtu_min || v->mtu > r->mtu_max)) {
        return 0;
    }
    return 1;
}

/* contract: see icmp6.h. */
void icmp6_rule_any(struct icmp6_rule *r)
{
    memset(r, 0, sizeof *r);
    memset(r->types, 0xff, sizeof r->types);
    memset(r->codes, 0xff, sizeof r->codes);
    r->hooks = (1u << (ICMP6_HOOK_POSTROUTING + 1)) - 1;
    r->roles = ICMP6_ROLE_LINK_LOCAL | ICMP6_ROLE_END_TO_END | ICMP6_ROLE_ANY_TO_END
               | ICMP6_ROLE_UNCLASSIFIED;
    r->ike = ICMP6_IKE_MUST_NOT | ICMP6_IKE_SHOULD_NOT | ICMP6_IKE_MAY | ICMP6_IKE_UNCLASSIFIED;
    r->frag = (1u << (ICMP6_FRAG_NON_FIRST + 1)) - 1;
    r->src_classes = (1u << (ICMP6_ADDR_ABSENT + 1)) - 1;
    r->dst_classes = r->src_classes;
    r->hop_min = 0;
    r->hop_max = 255;
    r->chain_complete = -1;
    r->malformed = -1;
}

/* contract: see icmp6.h. Cheap, selective tests come first: most rules of a
 * policy table name ICMPv6 types, so the type set rejects most rules. */
int icmp6_rule_matches(const struct icmp6_table *t, const struct icmp6_rule *r,
                       const struct icmp6_view *v, uint32_t hook,
                       uint32_t indev, uint32_t outdev)
{
    if (t == NULL || r == NULL || v == NULL || hook > 7) {
        return 0;
    }
    if (!set_matches(r->types, v->icmpv6_type, r->need & ICMP6_NEED_TYPE) ||
        !set_matches(r->codes, v->icmpv6_code, r->need & ICMP6_NEED_CODE)) {
        return 0;
    }
    if (!((1u << hook) & r->hooks) || !((1u << v->frag_status) & r->frag)) {
        return 0;
    }
    /* A packet without an IPv6 header reports hop limit 0 and is compared as such. */
    if (v->hop_limit < r->hop_min || v->hop_limit > r->hop_max) {
        return 0;
    }
    if (r->chain_complete >= 0 && v->chain_complete != r->chain_complete) {
        return 0;
    }
    if (r->malformed >= 0 && (v->malformed != 0) != (r->malformed != 0)) {
        return 0;
    }
    if ((r->indev != 0 && r->indev != indev) || (r->outdev != 0 && r->outdev != outdev)) {
        return 0;
    }
    if (!icmp_matches(t, r, v)) {
        return 0;
    }
    return addr_matches(v->src, v->src_class, r->src_classes, r->src_prefix, r->src_plen) &&
           addr_matches(v->dst, v->dst_class, r->dst_classes, r->dst_prefix, r->dst_plen);
}

/* contract: see icmp6.h. */
int icmp6_is_non_icmpv6(const struct icmp6_view *v)
{
    if (v == NULL || v->malformed != 0) {
        return 0;
    }
    if (v->frag_status == ICMP6_FRAG_NON_FIRST) {
        /* The Fragment header names the first header of the fragmentable
         * part: a protocol there is the datagram's upper layer. */
        return v->frag_next >= 0 && v->frag_next != NH_ICMPV6 &&
               !is_ext_header((uint8_t)v->frag_next);
    }
    return v->chain_complete && v->upper_layer >= 0 && v->upper_layer != NH_ICMPV6;
}

/* contract: the slot of (src, dst, id, hook) in f (f->n_slots > 0): FNV-1a over
 * (src, dst, id), mixed with the seed (FNV is no keyed hash: the seed makes
 * aiming at a chosen slot harder, not impossible; a lost entry only falls back
 * to the rules), plus the hook: a packet judged at two hooks (prerouting and
 * forward) has a decision at each, in neighbouring slots that never collide. */
static struct icmp6_fate_entry *fate_slot(const struct icmp6_fate *f, const struct icmp6_view *v,
                                          uint32_t hook)
{
    uint32_t h = 2166136261u ^ f->seed;
    for (size_t i = 0; i < 16; i++) {
        h = (h ^ v->src[i]) * 16777619u;
        h = (h ^ v->dst[i]) * 16777619u;
    }
    for (unsigned s = 0; s < 32; s += 8) {
        h = (h ^ ((v->frag_id >> s) & 0xffu)) * 16777619u;
    }
    h ^= h >> 15;
    return &f->slots[((h % f->n_slots) + hook) % f->n_slots];
}

/* contract: 1 and *decision if f remembers v's datagram at hook (fresh, and a
 * decision not above limit), else 0. */
static int fate_find(const struct icmp6_fate *f, const struct icmp6_view *v, uint32_t hook,
                     uint32_t indev, uint32_t outdev, uint32_t limit, uint32_t *decision)
{
    if (f->slots == NULL || f->n_slots == 0) {
        return 0;
    }
    const struct icmp6_fate_entry *e = fate_slot(f, v, hook);
    if (!e->used || e->id != v->frag_id || e->hook != hook || e->indev != indev ||
        e->outdev != outdev || memcmp(e->src, v->src, 16) != 0 ||
        memcmp(e->dst, v->dst, 16) != 0 || (uint32_t)(f->now - e->stamp) > f->ttl ||
        e->decision > limit) {
        return 0;
    }
    *decision = e->decision;
    return 1;
}

/* contract: remember that v's datagram (a first fragment) got decision at hook,
 * arriving and leaving through indev and outdev. */
static void fate_store(struct icmp6_fate *f, const struct icmp6_view *v, uint32_t hook,
                       uint32_t indev, uint32_t outdev, uint32_t decision)
{
    if (f->slots == NULL || f->n_slots == 0) {
        return;
    }
    struct icmp6_fate_entry *e = fate_slot(f, v, hook);
    memcpy(e->src, v->src, 16);
    memcpy(e->dst, v->dst, 16);
    e->id = v->frag_id;
    e->hook = hook;
    e->indev = indev;
    e->outdev = outdev;
    e->decision = decision;
    e->stamp = f->now;
    e->used = 1;
    f->stored++;
    f->last = ICMP6_FATE_STORED;
}

/* contract: see icmp6.h. */
uint32_t icmp6_walk(const struct icmp6_table *t, const struct icmp6_view *v, uint32_t hook,
                    uint32_t indev, uint32_t outdev)
{
    if (t == NULL || v == NULL) {
        return t != NULL ? t->n_rules : 0;
    }
    uint32_t n = t->rules != NULL ? t->n_rules : 0;
    uint32_t i = n;
    if (t->cand_off != NULL && t->cand != NULL) {
        uint32_t k = (v->icmpv6_type >= 0 && v->icmpv6_type < 256)
                         ? (uint32_t)v->icmpv6_type : 256u;
        uint32_t lo = t->cand_off[k];
        uint32_t hi = t->cand_off[k + 1u];
        if (hi > t->n_cand) {
            hi = t->n_cand;
        }
        for (uint32_t j = lo; j < hi; j++) {
            uint32_t r = t->cand[j];
            if (r < n && icmp6_rule_matches(t, &t->rules[r], v, hook, indev, outdev)) {
                i = r;
                break;
            }
        }
    } else {
        i = 0;
        while (i < n && !icmp6_rule_matches(t, &t->rules[i], v, hook, indev, outdev)) {
            i++;
        }
    }
    return i == n ? t->n_rules : i;
}

/* contract: see icmp6.h. Order: a remembered datagram first (reassembly takes
 * the upper layer from the first fragment, so its decision is the
 * datagram's), then other traffic, then the rule walk. */
uint32_t icmp6_classify(const struct icmp6_table *t, const uint8_t *buf,
                        size_t len, uint32_t hook, uint32_t indev,
                        uint32_t outdev, struct icmp6_view *scratch)
{
    struct icmp6_view local;
    if (t == NULL) {
        return 0;
    }
    if (scratch == NULL) {
        scratch = &local;
    }
    icmp6_parse(buf, len, t->ext_limit, scratch);
    struct icmp6_fate *f = t->fate;
    uint32_t top = t->non_icmpv6 ? t->n_rules + 1u : t->n_rules;
    uint32_t i = 0;
    int decided = 0;
    if (f != NULL) {
        f->last = ICMP6_FATE_NONE;
        if (scratch->frag_status == ICMP6_FRAG_NON_FIRST) {
            decided = fate_find(f, scratch, hook, indev, outdev, top, &i);
            f->last = decided ? ICMP6_FATE_FOLLOWED : ICMP6_FATE_UNKNOWN;
            f->followed += (uint64_t)decided;
            f->unknown += (uint64_t)!decided;
        }
    }
    if (!decided) {
        if (t->non_icmpv6 && icmp6_is_non_icmpv6(scratch)) {
            i = t->n_rules + 1u;
        } else {
            i = t->cls != NULL ? icmp6_cls_first(t->cls, t, scratch, hook, indev, outdev)
                               : icmp6_walk(t, scratch, hook, indev, outdev);
        }
        if (f != NULL && scratch->frag_status == ICMP6_FRAG_FIRST) {
            fate_store(f, scratch, hook, indev, outdev, i);
        }
    }
    if (t->hits != NULL) {
        t->hits[i]++;
    }
    if (t->type_hits != NULL && scratch->icmpv6_type >= 0 && scratch->icmpv6_type < 256) {
        t->type_hits[(uint8_t)scratch->icmpv6_type]++;
    }
    return i;
}

/* contract: see icmp6.h. A rule is a candidate for type k when a packet of that
 * type passes the rule's type test in icmp6_rule_matches (the only test that
 * depends on k alone), and for "no type" (k = 256) when it needs no type. */
uint32_t icmp6_index_candidates(const struct icmp6_table *t, uint32_t *cand_off,
                                uint32_t *cand, uint32_t cap)
{
    if (t == NULL || cand_off == NULL || cand == NULL) {
        return 0;
    }
    uint32_t n = t->rules != NULL ? t->n_rules : 0;
    uint32_t used = 0;
    for (uint32_t k = 0; k <= 256u; k++) {
        cand_off[k] = used;
        for (uint32_t r = 0; r < n; r++) {
            const struct icmp6_rule *rule = &t->rules[r];
            int fits;
            if (k == 256u) {
                fits = (rule->need & ICMP6_NEED_TYPE) == 0;
            } else {
                fits = (int)((rule->types[k >> 6] >> (k & 63u)) & 1u);
            }
            if (fits) {
                if (used >= cap) {
                    return 0;
                }
                cand[used++] = r;
            }
        }
    }
    cand_off[257] = used;
    return used;
}
