/* SPDX-License-Identifier: MIT */
/* gen.c - bounded packet generator for the benchmark.
 *
 *   gen IFNAME FRAMES_FILE COUNT RATE_PPS MAX_SECONDS
 *
 * Sends COUNT Ethernet frames (cycling through the frames in FRAMES_FILE:
 * each a 2-octet little-endian length then the frame) on IFNAME with
 * sendmmsg() on an AF_PACKET raw socket, paced to RATE_PPS (0 = as fast as
 * it goes), and stops after MAX_SECONDS whatever the count. Prints one JSON
 * line: {"sent": N, "seconds": S, "errors": E}. Bounded in count and time.
 */
#define _GNU_SOURCE
#pragma GCC diagnostic error "-Wall"
#pragma GCC diagnostic error "-Wextra"
#pragma GCC diagnostic error "-Wconversion"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { MAX_FRAMES = 64, MAX_FRAME = 2048, BATCH = 32 };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    static uint8_t frames[MAX_FRAMES][MAX_FRAME];
    size_t lens[MAX_FRAMES];
    size_t n_frames = 0;
    if (argc != 6) {
        fprintf(stderr, "usage: gen IFNAME FRAMES_FILE COUNT RATE_PPS MAX_SECONDS\n");
        return 2;
    }
    unsigned long long count = strtoull(argv[3], NULL, 10);
    double rate = strtod(argv[4], NULL), max_s = strtod(argv[5], NULL);
    FILE *f = fopen(argv[2], "rb");
    if (f == NULL) {
        perror("frames");
        return 2;
    }
    uint8_t hdr[2];
    while (n_frames < MAX_FRAMES && fread(hdr, 1, 2, f) == 2) {
        size_t len = (size_t)hdr[0] | (size_t)hdr[1] << 8;
        if (len == 0 || len > MAX_FRAME || fread(frames[n_frames], 1, len, f) != len) {
            fprintf(stderr, "bad frames file\n");
            return 2;
        }
        lens[n_frames++] = len;
    }
    fclose(f);
    if (n_frames == 0) {
        fprintf(stderr, "no frames\n");
        return 2;
    }
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_ifindex = (int)if_nametoindex(argv[1]);
    sll.sll_protocol = htons(ETH_P_IPV6);
    if (sll.sll_ifindex == 0 || bind(fd, (struct sockaddr *)&sll, sizeof sll) != 0) {
        perror("bind");
        return 1;
    }
    struct mmsghdr mm[BATCH];
    struct iovec iov[BATCH];
    unsigned long long sent = 0, errors = 0, next = 0;
    double t0 = now(), t = t0;
    while (sent < count && t - t0 < max_s) {
        unsigned int n = 0;
        for (; n < BATCH && sent + n < count; n++) {
            size_t k = (size_t)((next + n) % n_frames);
            iov[n].iov_base = frames[k];
            iov[n].iov_len = lens[k];
            memset(&mm[n], 0, sizeof mm[n]);
            mm[n].msg_hdr.msg_iov = &iov[n];
            mm[n].msg_hdr.msg_iovlen = 1;
        }
        int r = sendmmsg(fd, mm, n, 0);
        if (r > 0) {
            sent += (unsigned long long)r;
            next += (unsigned long long)r;
        } else {
            errors++;
            if (errno != ENOBUFS && errno != EAGAIN && errno != EINTR) {
                perror("sendmmsg");
                break;
            }
        }
        t = now();
        if (rate > 0) {
            double due = t0 + (double)sent / rate;  /* pace: sleep until the next batch is due */
            while (t < due && t - t0 < max_s) {
                double gap = due - t;
                if (gap > 0.0002) {
                    struct timespec ts = {0, (long)(gap * 1e9 * 0.8)};
                    nanosleep(&ts, NULL);
                }
                t = now();
            }
        }
    }
    printf("{\"sent\": %llu, \"seconds\": %.6f, \"errors\": %llu}\n", sent, now() - t0, errors);
    close(fd);
    return 0;
}
