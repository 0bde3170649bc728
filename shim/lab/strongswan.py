# SPDX-License-Identifier: MIT
"""strongSwan in the testbed: one charon per namespace, driven with swanctl.

The lab's one door to strongSwan (Debian's strongswan-charon, strongswan-swanctl,
strongswan-pki). Each charon is isolated from the host's strongSwan state:
- its own strongswan.conf (STRONGSWAN_CONF), listing the plugins it loads, so
  nothing of /etc/strongswan.d is read;
- its own swanctl directory (SWANCTL_DIR) with swanctl.conf, certificates, keys;
- its own vici socket (`swanctl --uri`) and log file;
- its own /run: charon's pid file path is compiled in (/run/charon.pid), so the
  charon runs in a mount namespace of its own (ip netns exec makes one per
  command) with a private directory bound over /run, and two charons (or the
  host's) never see each other's pid file.
Secrets (PSK, keys) are generated per run into the run's temporary directory.
Every wait is bounded.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from shim.core.errors import EnvironmentProblem
from shim.lab.runner import time_scale

__all__ = ["CHARON", "Charon", "SaState", "esp_unavailable", "make_ca", "make_psk", "parse_sas"]

CHARON = "/usr/lib/ipsec/charon"
_PLUGINS = ("random nonce openssl aes sha1 sha2 hmac gmp pem pkcs1 pkcs8 x509 revocation "
            "constraints pubkey kdf kernel-netlink socket-default vici")
_SWANCTL_DIRS = ("x509", "x509ca", "x509aa", "x509ocsp", "x509crl", "x509ac", "pubkey",
                 "private", "rsa", "ecdsa", "bliss", "pkcs8", "pkcs12")
_PACKAGES = "strongswan-charon strongswan-swanctl strongswan-pki"


def esp_unavailable(netns_cmd: list[str] | None = None) -> str | None:
    """Why this kernel cannot hold an ESP SA (AES-GCM, RFC 4106), or None when it can.

    Asked of the kernel itself: one SA added in a throwaway namespace, which is
    then removed with everything in it.
    """
    name = f"i6esp{os.getpid() % 100000}"
    add = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
    if add.returncode != 0:
        return f"cannot make a network namespace to probe ESP: {add.stderr.strip()}"
    try:
        proc = subprocess.run(
            ["ip", "-n", name, "xfrm", "state", "add", "src", "2001:db8::1", "dst", "2001:db8::2",
             "proto", "esp", "spi", "0x100", "mode", "transport", "aead", "rfc4106(gcm(aes))",
             "0x" + "11" * 20, "128"], capture_output=True, text=True, timeout=30)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
    if proc.returncode == 0:
        return None
    said = proc.stderr.strip() or "ip xfrm state add failed"
    return f"this kernel has no ESP transform ({said}): run it in the stock-kernel lane (make test-vm)"


def make_psk() -> str:
    """A fresh 32-octet pre-shared key in swanctl's base64 notation (never stored)."""
    return "0s" + base64.b64encode(os.urandom(32)).decode()


def _pki(conf: Path, *argv: str, stdin: bytes | None = None) -> bytes:
    if shutil.which("pki") is None:
        raise EnvironmentProblem(f"'pki' is not installed; install the Debian packages {_PACKAGES}")
    proc = subprocess.run(["pki", *argv], input=stdin, capture_output=True,
                          timeout=120 * time_scale(), env={**os.environ, "STRONGSWAN_CONF": str(conf)})
    if proc.returncode != 0:
        raise EnvironmentProblem(f"pki {argv[0]}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def make_ca(folder: Path, nodes: tuple[str, ...], *, bits: int = 2048) -> None:
    """A CA (RSA 2048) and one certificate per node (subject CN=NODE, SAN NODE), RSA of `bits`.

    Writes folder/ca.pem, folder/NODE.pem (certificate) and folder/NODE.key.
    """
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "strongswan.conf"  # pki's own: the host's /etc/strongswan.conf is not read
    conf.write_text("pki {\n  load = random nonce openssl gmp pem pkcs1 pkcs8 x509 sha1 sha2 pubkey\n}\n")
    ca_key = _pki(conf, "--gen", "--type", "rsa", "--size", "2048", "--outform", "pem")
    (folder / "ca.key").write_bytes(ca_key)
    ca = _pki(conf, "--self", "--ca", "--lifetime", "30", "--in", str(folder / "ca.key"),
              "--dn", "CN=icmp6-shim testbed CA", "--outform", "pem")
    (folder / "ca.pem").write_bytes(ca)
    for node in nodes:
        key = _pki(conf, "--gen", "--type", "rsa", "--size", str(bits), "--outform", "pem")
        (folder / f"{node}.key").write_bytes(key)
        pub = _pki(conf, "--pub", "--in", str(folder / f"{node}.key"))
        cert = _pki(conf, "--issue", "--lifetime", "30", "--cacert", str(folder / "ca.pem"),
                    "--cakey", str(folder / "ca.key"), "--dn", f"CN={node}", "--san", node,
                    "--outform", "pem", stdin=pub)
        (folder / f"{node}.pem").write_bytes(cert)


@dataclass(frozen=True, slots=True, kw_only=True)
class SaState:
    """One IKE_SA of `swanctl --list-sas`, with the states of its CHILD_SAs."""

    name: str
    state: str                      # ESTABLISHED, CONNECTING, ...
    children: tuple[tuple[str, str, str], ...]  # (name, state, "MODE ESP:ALGS")


_IKE_LINE = re.compile(r"^(\S+): #\d+, (\S+),")
_CHILD_LINE = re.compile(r"^  (\S+): #\d+, reqid \d+, (\S+), (\S+), (\S+)")


def parse_sas(text: str) -> tuple[SaState, ...]:
    """The IKE_SAs and CHILD_SAs of `swanctl --list-sas` text output."""
    sas: list[SaState] = []
    for line in text.splitlines():
        if m := _IKE_LINE.match(line):
            sas.append(SaState(name=m[1], state=m[2].rstrip(","), children=()))
        elif (m := _CHILD_LINE.match(line)) and sas:
            last = sas[-1]
            child = (m[1], m[2].rstrip(","), f"{m[3].rstrip(',')} {m[4].rstrip(',')}")
            sas[-1] = SaState(name=last.name, state=last.state, children=(*last.children, child))
    return tuple(sas)


class Charon:
    """charon in a namespace, with its own config, swanctl dir, vici socket, /run and log."""

    def __init__(self, *, netns: str, workdir: Path, swanctl_conf: str, psk: str | None = None,
                 ca: Path | None = None, node: str = "") -> None:
        self.netns = netns
        self.dir = workdir
        self.log_path = workdir / "charon.log"
        self.vici = workdir / "charon.vici"
        self.proc: subprocess.Popen[bytes] | None = None
        self._swanctl_conf = swanctl_conf
        self._psk = psk
        self._ca = ca
        self._node = node

    def _env(self) -> dict[str, str]:
        return {**os.environ, "STRONGSWAN_CONF": str(self.dir / "strongswan.conf"),
                "SWANCTL_DIR": str(self.dir / "swanctl")}

    def _write(self) -> None:
        (self.dir / "run").mkdir(parents=True, exist_ok=True)
        sw = self.dir / "swanctl"
        for sub in _SWANCTL_DIRS:
            (sw / sub).mkdir(parents=True, exist_ok=True)
        # Short retransmits keep a failing exchange inside a scenario's bounded time;
        # routes are the testbed's, not charon's.
        (self.dir / "strongswan.conf").write_text(f"""\
charon {{
  load_modular = no
  load = {_PLUGINS}
  install_routes = no
  retransmit_tries = 3
  retransmit_timeout = 1.0
  retransmit_base = 1.4
  plugins {{
    vici {{
      socket = unix://{self.vici}
    }}
  }}
  filelog {{
    main {{
      path = {self.log_path}
      time_format = %T
      default = 1
      flush_line = yes
    }}
  }}
}}
swanctl {{
  load = pem pkcs1 x509 revocation constraints pubkey openssl random
  socket = unix://{self.vici}
}}
""")
        conf = self._swanctl_conf
        if self._psk is not None:
            conf += f'\nsecrets {{\n  ike-testbed {{\n    secret = "{self._psk}"\n  }}\n}}\n'
        if self._ca is not None:
            shutil.copy(self._ca / "ca.pem", sw / "x509ca" / "ca.pem")
            shutil.copy(self._ca / f"{self._node}.pem", sw / "x509" / f"{self._node}.pem")
            shutil.copy(self._ca / f"{self._node}.key", sw / "private" / f"{self._node}.pem")
        (sw / "swanctl.conf").write_text(conf)
        for secret in (sw / "private").iterdir():
            secret.chmod(0o600)

    def start(self, timeout: float = 20.0) -> None:
        """Start charon and load the configuration; raises EnvironmentProblem on failure."""
        if not os.access(CHARON, os.X_OK) or shutil.which("swanctl") is None:
            raise EnvironmentProblem(f"strongSwan is not installed ({CHARON}, swanctl); install "
                                     f"the Debian packages {_PACKAGES}")
        self._write()
        timeout *= time_scale()
        run = self.dir / "run"
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "sh", "-c",
             f'mount --bind "$1" /run && exec "$2"', "charon-testbed", str(run), CHARON],
            env=self._env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.vici.exists():  # bounded: the vici socket appears once charon is up
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self.stop()
                raise EnvironmentProblem(f"charon in {self.netns} did not start: "
                                         f"{(err or self.log_tail()).strip()[-300:]}")
            time.sleep(0.05)
        load = self.swanctl("--load-all", "--noprompt", timeout=timeout)
        if load.returncode != 0:
            self.stop()
            raise EnvironmentProblem(f"swanctl --load-all in {self.netns}: "
                                     f"{(load.stdout + load.stderr).strip()[-300:]}")

    def swanctl(self, *argv: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        """swanctl against this charon's vici socket, in its namespace."""
        return subprocess.run(["ip", "netns", "exec", self.netns, "swanctl", *argv,
                               "--uri", f"unix://{self.vici}"], env=self._env(),
                              capture_output=True, text=True, timeout=timeout)

    def sas(self) -> tuple[SaState, ...]:
        return parse_sas(self.swanctl("--list-sas").stdout)

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def log_tail(self, n: int = 5) -> str:
        return "\n".join(self.log_lines()[-n:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (charon removes its policies and SAs), SIGKILL after `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        # `ip netns exec` execs sh, which execs charon: the child's pid is charon's.
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
