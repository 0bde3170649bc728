#!/usr/bin/env bash
# `make test-vm`: run the committed tree's `CI=true make test` in a fresh Debian 12 guest with
# Debian's stock kernel (nft queue expression, ESP) and systemd as PID 1. See docs/testbed.md.
#
# Phases: host tools -> guest image (cached, vm/build-image.sh) -> accelerator probe (KVM if
# a guest really boots with it, else TCG) -> boot and test (then the .deb under systemd,
# vm/guest/systemd-checks.sh) -> results. Exit status is the guest's `make test` status, or
# the systemd checks' when that is 0 (2 when the lane itself broke). Knobs (environment):
#   ICMP6_SHIM_VM_CACHE        cache directory           (/var/cache/icmp6-shim-vm)
#   ICMP6_SHIM_VM_ACCEL        auto | kvm | tcg          (auto)
#   ICMP6_SHIM_VM_CPUS/_MEM    guest vCPUs / MiB         (2 / 4096)
#   ICMP6_SHIM_VM_TIMEOUT      whole guest run, seconds  (4800)
#   ICMP6_SHIM_TIME_SCALE      factor for the tests' waits (1 with KVM, 6 with TCG)
#   ICMP6_SHIM_VM_PYTEST_ARGS  pytest arguments in the guest (all tests)
#   ICMP6_SHIM_VM_ADVERSARIAL=1  also run `make test-adversarial` in the guest (its table
#                              goes to results/adversarial.log; its status joins the exit)
#   ICMP6_SHIM_VM_TESTBED="NAME ..."  also run `icmp6-shim testbed run NAME` for each named
#                              scenario after the tests (results/testbed-NAME.log; printed
#                              here; a scenario's failure joins the exit), e.g. "ike-deadlock"
#   ICMP6_SHIM_VM_REBUILD=1    rebuild the image even when cached
#   ICMP6_SHIM_VM_WARM=1       development loops only: boot a second image that already holds
#                              the Makefile's packages (`make print-packages`), so the guest's
#                              system-deps is a no-op. It proves nothing about installing; CI
#                              never sets it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cache=${ICMP6_SHIM_VM_CACHE:-/var/cache/icmp6-shim-vm}
cpus=${ICMP6_SHIM_VM_CPUS:-2}
mem=${ICMP6_SHIM_VM_MEM:-4096}
guest_timeout=${ICMP6_SHIM_VM_TIMEOUT:-4800}
t0=$(date +%s)
t_phase=$t0
timings=()
phase() {  # phase NAME: close the phase that ran since the last call
	local now; now=$(date +%s)
	timings+=("$(printf '%-14s %5ss' "$1" $((now - t_phase)))")
	t_phase=$now
}
say() { echo "test-vm: $*"; }

[ "$(id -u)" = 0 ] || { echo "error: make test-vm needs root (mmdebstrap, KVM)"; exit 2; }

# 1. Host tools, installed like system-deps installs the suite's: only when missing.
host_packages="qemu-system-x86 qemu-utils mmdebstrap e2fsprogs"
missing=""
for p in $host_packages; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
	say "installing host tools:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing
fi
phase host-tools

# 2. The guest image (downloads bookworm's packages and the stock kernel once).
mkdir -p "$cache"
if [ "${ICMP6_SHIM_VM_WARM:-0}" = 1 ]; then
	ICMP6_SHIM_VM_WARM_PACKAGES=$(make -s -C "$repo" print-packages)
	export ICMP6_SHIM_VM_WARM_PACKAGES
	say "warm image (development): the guest's packages are preinstalled, install steps unproven"
fi
img=$(bash "$here/build-image.sh" "$cache" | tail -1)
say "image: $(cat "$img/done")"
phase image

# 3. KVM only if a guest really boots with it: on some hosts /dev/kvm opens and KVM_CREATE_VM
# works, yet the guest hangs before its first console line (CPUID the host cannot give).
# The probe boots the kernel with no root to its panic, which takes ~2 s under KVM.
accel=${ICMP6_SHIM_VM_ACCEL:-auto}
if [ "$accel" = auto ]; then
	accel=tcg
	if [ -c /dev/kvm ]; then
		probe=$(mktemp)
		timeout 30 qemu-system-x86_64 -accel kvm -cpu host -m 256 -kernel "$img/vmlinuz" \
			-append "console=ttyS0 panic=-1" -no-reboot -display none -monitor none \
			-serial "file:$probe" < /dev/null > /dev/null 2>&1 || true
		if grep -q 'Kernel panic' "$probe"; then accel=kvm
		else say "KVM: /dev/kvm is there but a guest does not boot with it (no console output in 30 s)"; fi
		rm -f "$probe"
	else
		say "KVM: no /dev/kvm"
	fi
fi
case $accel in
	kvm) accel_args=(-accel kvm -cpu host); scale=${ICMP6_SHIM_TIME_SCALE:-1} ;;
	tcg) accel_args=(-accel tcg,thread=multi -cpu max); scale=${ICMP6_SHIM_TIME_SCALE:-6} ;;
	*) echo "error: ICMP6_SHIM_VM_ACCEL=$accel: use auto, kvm or tcg"; exit 2 ;;
esac
say "accelerator: $accel (${ICMP6_SHIM_VM_ACCEL:-auto}), $cpus vCPUs, $mem MiB, time scale $scale"
phase accel-probe

# 4. The commit under test, as a fresh clone has it (uncommitted changes are not in it).
run="$cache/runs/$(date +%Y%m%d-%H%M%S)-$(git -C "$repo" rev-parse --short HEAD)"
mkdir -p "$run/results"
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
	say "note: the work tree has uncommitted changes; the guest tests HEAD ($(git -C "$repo" rev-parse --short HEAD))"
fi
git -C "$repo" archive --format=tar --prefix=src/ HEAD > "$run/src.tar"
{
	printf 'ICMP6_SHIM_TIME_SCALE=%q\n' "$scale"
	printf 'ICMP6_SHIM_VM_ACCEL=%q\n' "$accel"
	printf 'ICMP6_SHIM_VM_PYTEST_ARGS=%q\n' "${ICMP6_SHIM_VM_PYTEST_ARGS:-}"
	printf 'ICMP6_SHIM_VM_ADVERSARIAL=%q\n' "${ICMP6_SHIM_VM_ADVERSARIAL:-0}"
	printf 'ICMP6_SHIM_VM_TESTBED=%q\n' "${ICMP6_SHIM_VM_TESTBED:-}"
} > "$run/lane.env"
# Where this host's own network needs a local CA (a TLS-inspecting egress: the host's pip is
# told so by PIP_CERT / SSL_CERT_FILE), the guest, whose traffic leaves through the host, gets
# the same bundle for its pip. A plain network needs nothing: the guest then uses pip's own.
ca=""
for f in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" "${REQUESTS_CA_BUNDLE:-}"; do
	[ -n "$f" ] && [ -f "$f" ] && { ca=$f; break; }
done
if [ -z "$ca" ] && compgen -G '/usr/local/share/ca-certificates/*.crt' > /dev/null; then
	ca=/etc/ssl/certs/ca-certificates.crt
fi
extra=(lane.env)
if [ -n "$ca" ]; then
	cp "$ca" "$run/ca-bundle.crt"
	extra+=(ca-bundle.crt)
	say "network: the guest's pip trusts this host's CA bundle $ca"
fi
tar -r -f "$run/src.tar" -C "$run" "${extra[@]}"
rm -f "$run/ca-bundle.crt"
truncate -s %1M "$run/src.tar"
truncate -s 256M "$run/results.tar"
qemu-img create -q -f qcow2 -b "$img/root.img" -F raw "$run/root.qcow2"

# 5. Boot: the guest's lane unit runs vm/guest/lane.sh of this commit and powers off.
say "booting; console in $run/console.log"
set +e
timeout "$guest_timeout" qemu-system-x86_64 "${accel_args[@]}" -smp "$cpus" -m "$mem" \
	-kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
	-append "root=/dev/vda rw console=ttyS0 quiet panic=-1" -no-reboot \
	-display none -monitor none -serial stdio \
	-drive "file=$run/root.qcow2,if=virtio,format=qcow2" \
	-drive "file=$run/src.tar,if=virtio,format=raw,readonly=on" \
	-drive "file=$run/results.tar,if=virtio,format=raw" \
	-netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
	< /dev/null 2>&1 | tee "$run/console.log"
qrc=${PIPESTATUS[0]}
set -e
phase guest
rm -f "$run/root.qcow2"   # the guest's disk: GBs, and never reused

# 6. Results.
rc=2
summary="the guest wrote no result (qemu exit $qrc; 124 means the $guest_timeout s limit)"
if tar -x -f "$run/results.tar" -C "$run/results" 2>/dev/null && [ -f "$run/results/rc" ]; then
	rc=$(cat "$run/results/rc")
	summary=$(cat "$run/results/summary")
fi
rm -f "$run/results.tar" "$run/src.tar"
# Keep the logs of the last five runs.
ls -1d "$cache"/runs/*/ 2>/dev/null | head -n -5 | xargs -r rm -rf
echo
say "phases (host):"
printf '  %s\n' "${timings[@]}"
if [ -f "$run/results/phases.txt" ]; then
	say "phases (guest):"
	sed 's/^/  /' "$run/results/phases.txt"
fi
grep -h '"backend_chosen"' "$run/results/auto.log" 2>/dev/null | sed 's/^/test-vm: auto: /' || true
if [ -f "$run/results/adversarial.log" ]; then
	say "adversarial suite in the guest:"
	sed -n '/^attack  /,$p' "$run/results/adversarial.log" | sed 's/^/  /'
fi
for f in "$run"/results/testbed-*.log; do
	[ -f "$f" ] || continue
	say "testbed in the guest: $(basename "$f" .log | sed 's/^testbed-//')"
	sed 's/^/  /' "$f"
done
if [ -f "$run/results/systemd-checks.log" ]; then
	say "systemd checks in the guest (the .deb under systemd as PID 1):"
	grep '^systemd-check ' "$run/results/systemd-checks.log" | sed 's/^/  /'
fi
say "logs: $run/results"
say "total $(( $(date +%s) - t0 ))s, accel $accel, exit $rc"
echo "test-vm: $summary"
exit "$rc"
