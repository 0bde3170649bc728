/* SPDX-License-Identifier: MIT */
/* strict.h - included first by every C file of ours (not by the cffi wrapper).
 *
 * Strictness lives in the sources, not on the command line: every build of our
 * C (the cffi extension, the fuzzers, the benchmark) fails on a warning, while
 * the cffi-generated wrapper, compiled in the same extension with the same
 * flags, only warns. GCC and Clang both honour these group names.
 */
#ifndef ICMP6_SHIM_STRICT_H
#define ICMP6_SHIM_STRICT_H
#pragma GCC diagnostic error "-Wall"
#pragma GCC diagnostic error "-Wextra"
#pragma GCC diagnostic error "-Wpedantic"
#pragma GCC diagnostic error "-Wshadow"
#pragma GCC diagnostic error "-Wconversion"
#pragma GCC diagnostic error "-Wsign-conversion"
#endif
