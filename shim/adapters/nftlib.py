# SPDX-License-Identifier: MIT
"""The door to libnftables (ctypes) and to nf_tables' ruleset generation (raw netlink).

Invariants:
- an NftContext keeps one NETLINK_NETFILTER socket for its whole life: libnftables opens
  it in nft_ctx_new and sends every batch over it (nftables >= 0.9.9, which also removed
  the socket reopen; checked for Debian 12's 1.0.6). A table created with `flags owner`
  through it belongs to that socket's port: other processes' `flush ruleset` skips it and
  their changes to it get EPERM; the kernel deletes it when the socket closes;
- a forked child (the supervisor's workers) closes its inherited copy of that socket at
  once: a table owned by the parent must go when the parent goes, not when its last
  worker exits;
- `generation()` asks the kernel for the ruleset generation, which every committed
  nf_tables transaction in the namespace (nft, iptables-nft, firewalld) increases and
  reads never change: an unchanged generation means an unchanged ruleset.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import time
import weakref

from shim.core.errors import EnvironmentProblem

__all__ = ["LIBRARY", "NftContext", "delete_table_at", "generation", "library_present"]

LIBRARY = "libnftables.so.1"
NETLINK_NETFILTER = 12
_OUTPUT_STATELESS = 1 << 2  # NFT_CTX_OUTPUT_STATELESS: no counters or quotas
_OUTPUT_TERSE = 1 << 11     # NFT_CTX_OUTPUT_TERSE: no set elements (our sets are dynamic)
_GETGEN = (10 << 8) | 16    # NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN
_NEWGEN = (10 << 8) | 15    # NFT_MSG_NEWGEN, the answer
_NFTA_GEN_ID = 1
_NLMSG_ERROR = 2
_BATCH_BEGIN, _BATCH_END = 16, 17  # NFNL_MSG_BATCH_BEGIN / _END
_NFNL_BATCH_GENID = 1
_DELTABLE = (10 << 8) | 2          # NFT_MSG_DELTABLE
_NFTA_TABLE_NAME = 1


def _library() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(LIBRARY, use_errno=True)
    except OSError as exc:
        raise EnvironmentProblem(f"{LIBRARY} cannot be loaded ({exc}); install the Debian "
                                 "package 'libnftables1'") from exc
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_free.restype = None
    for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
        getattr(lib, name).restype = ctypes.c_char_p
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_ctx_output_set_flags.restype = None
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return lib


def _netfilter_sockets() -> dict[int, str]:
    """This process's open fds that are sockets, with their inode link."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the directory's own fd, or one closed meanwhile
        if link.startswith("socket:"):
            out[int(name)] = link
    return out


def _is_netfilter(fd: int) -> bool:
    try:
        probe = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    try:
        return probe.family == socket.AF_NETLINK and probe.proto == NETLINK_NETFILTER
    finally:
        probe.close()


class NftContext:
    """One libnftables context and its netlink socket, used from one thread."""

    def __init__(self) -> None:
        self._lib = _library()
        before = _netfilter_sockets()
        ctx = self._lib.nft_ctx_new(0)  # NFT_CTX_DEFAULT: opens the netlink socket
        if not ctx:
            raise EnvironmentProblem("nft_ctx_new failed: libnftables could not start")
        new = [fd for fd, link in _netfilter_sockets().items()
               if before.get(fd) != link and _is_netfilter(fd)]
        if len(new) != 1:
            self._lib.nft_ctx_free(ctx)
            raise EnvironmentProblem(f"{LIBRARY} opened {len(new)} netlink sockets, expected 1: "
                                     "this libnftables does not keep one socket per context")
        self._ctx: int | None = ctx
        self.fd = new[0]
        self._lib.nft_ctx_buffer_output(ctx)
        self._lib.nft_ctx_buffer_error(ctx)
        self._lib.nft_ctx_output_set_flags(ctx, _OUTPUT_STATELESS | _OUTPUT_TERSE)
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget_in_child(ref))

    @property
    def open(self) -> bool:
        return self._ctx is not None

    def run(self, text: str) -> str:
        """Run nft commands (one batch, one transaction); return what they print.

        Raises:
            EnvironmentProblem: the kernel or the parser refused them (their first error line).
        """
        if self._ctx is None:
            raise EnvironmentProblem("the libnftables context is closed")
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, text.encode())
        out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode(errors="replace")
        err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(errors="replace")
        if rc != 0:
            lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
            first = next((ln for ln in lines if ln.startswith("Error")), lines[0] if lines else "")
            raise EnvironmentProblem(first or f"nft_run_cmd_from_buffer returned {rc}")
        return out

    def close(self) -> None:
        """Free the context; its socket closes, and with it every table it owns."""
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            self._lib.nft_ctx_free(ctx)


def _forget_in_child(ref: weakref.ref[NftContext]) -> None:
    nft = ref()
    if nft is not None and nft._ctx is not None:
        # Not nft_ctx_free: the parent still uses that context. The child only drops its
        # copy of the socket, so an owned table's life stays the parent's.
        nft._ctx = None
        try:
            os.close(nft.fd)
        except OSError:
            pass


def generation(sock: socket.socket | None = None) -> int:
    """The namespace's nf_tables ruleset generation (NFT_MSG_GETGEN).

    Args:
        sock: a NETLINK_NETFILTER socket to ask on (one is opened and closed if None).

    Raises:
        OSError: the kernel did not answer (no nf_tables, or the socket failed).
    """
    own = sock is None
    s = sock or socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        s.settimeout(2.0)
        # A sequence number of this request's own: a late answer to an earlier request that
        # timed out (still in a kept socket) is skipped, not taken for this one's.
        seq = time.monotonic_ns() & 0xFFFFFFFF
        s.send(struct.pack("=IHHIIBBH", 20, _GETGEN, 1, seq, 0, socket.AF_UNSPEC, 0, 0))
        for _ in range(16):  # bounded: the answer is the first message for our request
            data = s.recv(8192)
            off = 0
            while off + 16 <= len(data):
                length, kind, _flags, got = struct.unpack_from("=IHHI", data, off)
                if got != seq:
                    off += max(length + (-length % 4), 16)
                    continue
                if kind == _NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, off + 16)[0]
                    raise OSError(code, f"NFT_MSG_GETGEN: {os.strerror(code)}")
                if kind == _NEWGEN:
                    return _gen_id(data[off + 20:off + length])
                off += max(length + (-length % 4), 16)
        raise OSError(errno.EPROTO, "NFT_MSG_GETGEN: no answer")
    finally:
        if own:
            s.close()


def _gen_id(attrs: bytes) -> int:
    off = 0
    while off + 4 <= len(attrs):
        length, kind = struct.unpack_from("=HH", attrs, off)
        if kind == _NFTA_GEN_ID and length >= 8:
            return int(struct.unpack_from("!I", attrs, off + 4)[0])
        off += max(length + (-length % 4), 4)
    raise OSError(errno.EPROTO, "NFT_MSG_NEWGEN without a generation id")


def library_present() -> str | None:
    """None if libnftables can be loaded, else why not."""
    try:
        _library()
    except EnvironmentProblem as exc:
        return str(exc)
    return None



def _nlmsg(kind: int, flags: int, seq: int, family: int, res_id: int, attrs: bytes) -> bytes:
    body = struct.pack("=BBH", family, 0, socket.htons(res_id)) + attrs
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def _attr(kind: int, data: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(data), kind) + data + b"\0" * (-len(data) % 4)


def delete_table_at(family: int, name: str, gen: int) -> bool:
    """Delete table `name` only if the ruleset is still at generation `gen`.

    One batch whose begin message carries NFNL_BATCH_GENID: the kernel refuses the whole
    batch (ERESTART) when anything was committed since, so a table seen empty at `gen`
    is never deleted after someone filled it.

    Returns:
        True if the kernel deleted it; False if the generation moved or it was refused.
    """
    batch = (_nlmsg(_BATCH_BEGIN, 1, 1, socket.AF_UNSPEC, 10,
                    _attr(_NFNL_BATCH_GENID, struct.pack("!I", gen)))
             + _nlmsg(_DELTABLE, 1 | 4, 2, family, 0, _attr(_NFTA_TABLE_NAME, name.encode() + b"\0"))
             + _nlmsg(_BATCH_END, 1, 3, socket.AF_UNSPEC, 10, b""))
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as s:
        s.settimeout(2.0)
        s.send(batch)
        for _ in range(16):  # bounded: one ack, or one error, answers the batch
            try:
                data = s.recv(8192)
            except OSError:
                return False
            off = 0
            while off + 20 <= len(data):
                length, kind, _flags, seq = struct.unpack_from("=IHHI", data, off)
                if kind == _NLMSG_ERROR:
                    code = struct.unpack_from("=i", data, off + 16)[0]
                    if code != 0 or seq == 2:
                        return bool(code == 0 and seq == 2)
                off += max(length + (-length % 4), 16)
    return False
