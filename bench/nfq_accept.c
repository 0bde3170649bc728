/* SPDX-License-Identifier: MIT */
/* nfq_accept.c - the bare C baseline: accept everything, recvmmsg + batched verdicts.
 *
 *   nfq_accept QUEUE MAXLEN RCVBUF
 *
 * Binds QUEUE (copy packet, range 0xffff), then loops: recvmmsg up to 64
 * messages, one NFQNL_MSG_VERDICT_BATCH NF_ACCEPT for the highest id seen
 * (every lower id was received before, so each packet gets one verdict).
 * No parse, no rules: the ceiling any consumer of this queue can reach.
 * Stops on SIGTERM/SIGINT and prints {"packets": N} as one JSON line.
 */
#define _GNU_SOURCE
#pragma GCC diagnostic error "-Wall"
#pragma GCC diagnostic error "-Wextra"
#pragma GCC diagnostic error "-Wconversion"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/netlink.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { BATCH = 64, SLOT = 65536 + 4096 };
static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static size_t attr(uint8_t *p, uint16_t type, const void *data, uint16_t len)
{
    uint16_t alen = (uint16_t)(4 + len);
    memcpy(p, &alen, 2);
    memcpy(p + 2, &type, 2);
    memcpy(p + 4, data, len);
    return (size_t)(alen + 3) & ~(size_t)3;
}

static int config(int fd, uint16_t queue, uint32_t maxlen)
{
    uint8_t buf[128] = {0};
    size_t off = 20;
    uint8_t cmd[4] = {1, 0, 0, 10};               /* NFQNL_CFG_CMD_BIND, pf AF_INET6 */
    uint8_t params[5] = {0, 0, 0xff, 0xff, 2};    /* range 0xffff, NFQNL_COPY_PACKET */
    uint32_t ml = htonl(maxlen);
    off += attr(buf + off, 1, cmd, 4);
    off += attr(buf + off, 2, params, 5);
    off += attr(buf + off, 3, &ml, 4);
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    h->nlmsg_len = (uint32_t)off;
    h->nlmsg_type = (3 << 8) | 2;
    h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    buf[18] = (uint8_t)(queue >> 8);
    buf[19] = (uint8_t)queue;
    if (send(fd, buf, off, 0) < 0) {
        return -1;
    }
    uint8_t reply[4096];
    ssize_t r = recv(fd, reply, sizeof reply, 0);
    int err = 0;
    if (r >= 20) {
        memcpy(&err, reply + 16, 4);
    }
    return r >= 20 && err == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: nfq_accept QUEUE MAXLEN RCVBUF\n");
        return 2;
    }
    uint16_t queue = (uint16_t)atoi(argv[1]);
    int rcvbuf = atoi(argv[3]);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    int fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER);
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("netlink");
        return 1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
    if (config(fd, queue, (uint32_t)atoi(argv[2])) != 0) {
        fprintf(stderr, "bind queue %u failed\n", queue);
        return 1;
    }
    static uint8_t rx[BATCH][SLOT];
    struct mmsghdr mm[BATCH];
    struct iovec iov[BATCH];
    unsigned long long packets = 0;
    fprintf(stderr, "bound\n");
    while (!stop) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0) {
            continue;
        }
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = rx[i];
            iov[i].iov_len = SLOT;
            memset(&mm[i], 0, sizeof mm[i]);
            mm[i].msg_hdr.msg_iov = &iov[i];
            mm[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(fd, mm, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            continue;
        }
        uint32_t last = 0;
        int have = 0;
        for (int i = 0; i < n; i++) {
            const uint8_t *m = rx[i];
            uint16_t type;
            memcpy(&type, m + 4, 2);
            /* The first attribute of a packet message is NFQA_PACKET_HDR: id at octet 24. */
            if (mm[i].msg_len >= 28 && type == (3 << 8)) {
                last = (uint32_t)m[24] << 24 | (uint32_t)m[25] << 16 | (uint32_t)m[26] << 8 | m[27];
                have = 1;
                packets++;
            }
        }
        if (have) {
            uint8_t v[32] = {0};
            uint32_t len = 32, verdict[2] = {htonl(1), htonl(last)};
            uint16_t type = (3 << 8) | 3, flags = NLM_F_REQUEST, alen = 12, atype = 2;
            memcpy(v, &len, 4);
            memcpy(v + 4, &type, 2);
            memcpy(v + 6, &flags, 2);
            v[18] = (uint8_t)(queue >> 8);
            v[19] = (uint8_t)queue;
            memcpy(v + 20, &alen, 2);
            memcpy(v + 22, &atype, 2);
            memcpy(v + 24, verdict, 8);
            send(fd, v, 32, 0);
        }
    }
    printf("{\"packets\": %llu}\n", packets);
    return 0;
}
