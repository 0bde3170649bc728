#!/bin/bash
# Inside the lane's guest (a fresh Debian 12, stock kernel, systemd as PID 1), as root:
# build the commit's tree from nothing with its own Makefile and run `CI=true make test`.
# Started by icmp6-vm-lane.service (vm/image/); its output is the serial console.
# Then the shipped unit under this systemd (vm/guest/systemd-checks.sh: `make deb`, apt
# install, start, reload, watchdog, stop, purge).
# Results go back on /dev/vdc as a tar: rc, summary, phases.txt, test.log, auto.log,
# backends.txt (each backend case's outcome), systemd-checks.log.
set -uo pipefail
lane=/root/lane
out=/root/out
rm -rf "$out" && mkdir -p "$out"
# shellcheck source=/dev/null
. "$lane/lane.env"   # ICMP6_SHIM_TIME_SCALE, ICMP6_SHIM_VM_ACCEL, ICMP6_SHIM_VM_PYTEST_ARGS,
                     # ICMP6_SHIM_VM_ADVERSARIAL, ICMP6_SHIM_VM_TESTBED
export ICMP6_SHIM_TIME_SCALE CI=true DEBIAN_FRONTEND=noninteractive
# The suite's backend fixture fails (not skips) a backend this kernel refuses, and writes
# each backend case's outcome to the report this lane checks below (tests/conftest.py).
export ICMP6_SHIM_VM_LANE=1 ICMP6_SHIM_BACKEND_REPORT="$out/backends.txt"
if [ -f "$lane/ca-bundle.crt" ]; then  # the host's network needs its CA (see vm/run.sh)
	export PIP_CERT="$lane/ca-bundle.crt" SSL_CERT_FILE="$lane/ca-bundle.crt"
fi

say() { echo "icmp6-vm: $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
phase_start=$(up)
phase() {  # phase NAME: record how long the phase since the last one took (guest clock)
	local now; now=$(up)
	awk -v n="$1" -v a="$phase_start" -v b="$now" 'BEGIN { printf "%-14s %6.0fs\n", n, b - a }' >> "$out/phases.txt"
	phase_start=$now
}
finish() {
	echo "$1" > "$out/rc"
	say "done: rc=$1 $(cat "$out/summary" 2>/dev/null)"
	tar -c -f /dev/vdc -C "$out" . && sync
	exit 0   # the unit powers the guest off either way
}

printf '%-14s %6.0fs\n' guest-boot "$(up)" > "$out/phases.txt"
say "kernel $(uname -r), accel ${ICMP6_SHIM_VM_ACCEL:-?}, time scale $ICMP6_SHIM_TIME_SCALE, $(nproc) cpus"
# slirp's DNS forwarder; networkd (no resolved on Debian 12) does not write resolv.conf.
echo "nameserver 10.0.2.3" > /etc/resolv.conf
for _ in $(seq 60); do ip route show default | grep -q . && break; sleep 1; done
ip route show default | grep -q . || { say "no network in the guest"; echo "no network" > "$out/summary"; finish 2; }

# A tree of its own, as a fresh clone would be: nothing built, no .venv. Not under /root
# (mode 700): test_without_cap_net_admin runs the venv's python as uid 65534, which must
# reach it, as it does in a checkout under /work or /home.
rm -rf /srv/icmp6-shim && cp -a "$lane/src" /srv/icmp6-shim && cd /srv/icmp6-shim || finish 2
phase_start=$(up)

# The three steps of `make test`, run one by one only to time them: system-deps installs
# every Debian package the suite needs (the fresh-machine proof), venv the Python side.
say "make system-deps"; make system-deps 2>&1 | tee "$out/system-deps.log"; rc=${PIPESTATUS[0]}
phase system-deps
[ "$rc" = 0 ] || { echo "make system-deps failed (rc=$rc)" > "$out/summary"; finish "$rc"; }
say "make venv"; make venv 2>&1 | tee "$out/venv.log"; rc=${PIPESTATUS[0]}
phase venv
[ "$rc" = 0 ] || { echo "make venv failed (rc=$rc)" > "$out/summary"; finish "$rc"; }

# What `auto` picks on this kernel, in the daemon's own words (one log line).
say "auto backend"
ns=icmp6vm-auto
ip netns add "$ns"
limit=$(awk -v s="$ICMP6_SHIM_TIME_SCALE" 'BEGIN { print int(20 * s) }')
timeout -s TERM "$limit" \
	ip netns exec "$ns" .venv/bin/icmp6-shim run --config config --log-format json > "$out/auto.log" 2>&1 &
daemon=$!
# Stop it (SIGTERM, as systemd would) once it is ready: bounded by the same limit.
for _ in $(seq "$limit"); do grep -q '"ready"' "$out/auto.log" && break; sleep 1; done
kill -TERM "$daemon" 2>/dev/null; wait "$daemon"
grep -h '"backend_chosen"' "$out/auto.log" || say "no backend_chosen in auto.log: $(tail -3 "$out/auto.log")"
say "tables left in $ns after stop: $(ip netns exec "$ns" nft list tables | tr '\n' ' ')"
ip netns del "$ns"
phase auto-backend

say "CI=true make test"
# shellcheck disable=SC2086 # the args are words on purpose
make test PYTEST_ARGS="${ICMP6_SHIM_VM_PYTEST_ARGS:-}" 2>&1 | tee "$out/test.log"; rc=${PIPESTATUS[0]}
phase make-test
grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$out/test.log" | tail -1 | tr -d '=' \
	| sed 's/^ *//; s/ *$//' > "$out/summary"
[ -s "$out/summary" ] || echo "make test exited $rc without a pytest summary" > "$out/summary"

# The host's kernel refuses the nft queue expression, so under CI=true its nft cases skip on
# the strength of this lane: here every backend case that ran must have passed, and nft
# cases must have run at all, or the lane fails (a selection without backend cases is exempt).
if [ -s "$out/backends.txt" ]; then
	line="backend cases:" bad=0
	for b in nft iptables; do
		p=$(grep -c "^passed $b " "$out/backends.txt" || true)
		n=$(grep -c "^[a-z]* $b " "$out/backends.txt" || true)
		line="$line $b $p/$n passed"
		[ "$p" = "$n" ] || bad=1
	done
	grep -q "^passed nft " "$out/backends.txt" || bad=1
	say "$line"
	[ "$bad" = 0 ] || line="$line: FAILED (every nft and iptables case must pass here)"
	echo "$(cat "$out/summary"); $line" > "$out/summary"
	[ "$bad" = 0 ] || [ "$rc" != 0 ] || rc=1
fi

# Optional: the adversarial suite (THC-IPv6 tools and crafted evasions) on this kernel, where
# the diversion is nft's. Its failure fails the lane too.
if [ "${ICMP6_SHIM_VM_ADVERSARIAL:-0}" = 1 ]; then
	say "make test-adversarial"
	make test-adversarial 2>&1 | tee "$out/adversarial.log"; arc=${PIPESTATUS[0]}
	phase adversarial
	echo "$(cat "$out/summary"); adversarial: $(grep -E '^[0-9]+ of [0-9]+ ok' "$out/adversarial.log" \
		|| echo "exit $arc")" > "$out/summary"
	[ "$rc" = 0 ] && rc=$arc
fi
# Optional: named testbed scenarios as a user runs them (the README's excerpt of a real run
# comes from here). Each one's exit status joins the lane's.
for name in ${ICMP6_SHIM_VM_TESTBED:-}; do
	say "testbed run $name"
	.venv/bin/icmp6-shim testbed run "$name" > "$out/testbed-$name.log" 2>&1; trc=$?
	phase "testbed-$name"
	echo "$(cat "$out/summary"); testbed $name: exit $trc" > "$out/summary"
	[ "$rc" = 0 ] && rc=$trc
done
# The Debian package under systemd as PID 1 (the unit's hardening, watchdog, reload, purge).
# Its failure fails the lane too; its own summary line joins the lane's.
say "systemd checks"
bash vm/guest/systemd-checks.sh 2>&1 | tee "$out/systemd-checks.log"; src=${PIPESTATUS[0]}
phase systemd-checks
sline=$(sed -n 's/^systemd-check summary [a-zA-Z]* //p' "$out/systemd-checks.log" | tail -1)
echo "$(cat "$out/summary"); systemd checks: ${sline:-exit $src}" > "$out/summary"
[ "$rc" = 0 ] && rc=$src
finish "$rc"
