#!/bin/bash
# Inside the lane's guest, after `make test`, from the tree's root, as root: the shipped unit
# under a real systemd (PID 1). Builds the Debian package (`make deb`), installs it with apt,
# and checks what an operator relies on: active after READY, STATUS, reload swaps the table
# (a real ping's verdict changes), the documented journal events, the watchdog restarts a
# stopped daemon, stop leaves no rule, the admin's `disable` survives a reinstall, purge
# leaves nothing. Exposure stays at 1.1 or lower. One line per check:
#   systemd-check NAME ok|FAIL DETAIL
# Exit status: 0 when every check is ok, else 1.
set -u   # no pipefail: `... | grep -q` may end its writer early, and that is a match
scale=${ICMP6_SHIM_TIME_SCALE:-1}
unit=icmp6-shim.service
conf=/etc/icmp6-shim
drop_in=$conf/rules.d/50-lane-drop-echo.toml
passed=0
failed=0
check() {  # check NAME ok|FAIL DETAIL
	echo "systemd-check $1 $2 ${3:-}"
	if [ "$2" = ok ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}
expect() {  # expect NAME DETAIL CMD...: ok when CMD succeeds
	local name=$1 detail=$2; shift 2
	if "$@"; then check "$name" ok "$detail"; else check "$name" FAIL "$detail"; fi
}
wait_for() {  # wait_for SECONDS CMD...: poll once a second, bounded
	local n=$1; shift
	for _ in $(seq "$n"); do "$@" && return 0; sleep 1; done
	"$@"
}
prop() { systemctl show -p "$1" --value "$unit"; }
# Event names the daemon logged (its journal lines are JSON objects with an "event" key),
# one per line, oldest first; every entry of the unit's cgroup, systemd's own lines skipped.
events() {
	journalctl -u "$unit" -o json --no-pager 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line).get("MESSAGE")
    if isinstance(msg, list):
        msg = bytes(msg).decode("utf-8", "replace")
    try:
        event = json.loads(msg).get("event")
    except (TypeError, ValueError, AttributeError):
        continue
    if event:
        print(event)'
}
count() { events | grep -cx "$1"; }
has_events() { local e; for e in "$@"; do events | grep -qx "$e" || return 1; done; }
our_rules() { nft list ruleset 2>/dev/null | grep -c icmp6_shim; ip6tables-save 2>/dev/null | grep -ci icmp6_shim; }
no_rules() { [ "$(our_rules | paste -sd' ')" = "0 0" ]; }
ping_lo() { ping -6 -c 1 -W "$((2 * scale))" ::1 > /dev/null 2>&1; }
stats() { icmp6-shim stats --config "$conf" 2>&1; }
limit=$((30 * scale))   # a start or reload under emulation: seconds

# 1. Build and install the package the Debian way.
make deb > /tmp/systemd-checks-deb.log 2>&1; rc=$?
deb=$(ls -1 dist/icmp6-shim_*.deb 2>/dev/null | tail -1)
expect deb-build "rc=$rc ${deb:-no .deb} ($(tail -1 /tmp/systemd-checks-deb.log))" test "$rc" = 0 -a -n "$deb"
[ -n "$deb" ] || { check summary FAIL "no package to install"; exit 1; }
apt-get install -y -q "./$deb" > /tmp/systemd-checks-apt.log 2>&1; rc=$?
expect deb-install "apt-get install ./$deb rc=$rc" test "$rc" = 0
expect enabled "is-enabled: $(systemctl is-enabled "$unit" 2>&1)" test "$(systemctl is-enabled "$unit" 2>&1)" = enabled

# 2. The postinst started it: Type=notify, so "active" means READY=1 arrived.
wait_for "$limit" systemctl is-active -q "$unit"
state="$(prop Type) $(prop ActiveState)/$(prop SubState)"
expect active-after-ready "$state" test "$state" = "notify active/running"
expect ready-event "journal: $(events | tr '\n' ' ' | cut -c1-200)" \
	has_events backend_chosen diversion_installed ready
nft_table() { nft list tables | grep -q icmp6_shim; }
expect backend-nft "$(nft list tables 2>&1 | grep icmp6_shim | tr '\n' ' ')" nft_table
status=$(prop StatusText)
expect status "StatusText=$status" test -n "$status"
status_shown() { systemctl status --no-pager "$unit" | grep -q 'Status: "'; }
expect status-shown "systemctl status shows it" status_shown
exposure=$(systemd-analyze security --no-pager "$unit" 2>&1 \
	| sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
expect exposure "systemd-analyze security: ${exposure:-?}" \
	awk -v e="${exposure:-99}" 'BEGIN { exit !(e <= 1.1) }'

# 3. Reload swaps the table: a drop-in that drops echo requests to ::1 turns a passing ping
# into a dropped one (the daemon's verdict, counted on the new rule), and back.
expect ping-before "ping ::1 passes with the shipped rules" ping_lo
reloads=$(count reload_ok)
cat > "$drop_in" <<'EOF'
[[rule]]
name = "lane-drop-echo"
type = "echo-request"
hook = "output"
dst = "::1/128"
verdict = "drop"
EOF
reloaded() { [ "$(count reload_ok)" -gt "$reloads" ]; }
systemctl reload "$unit"; rc=$?
wait_for "$limit" reloaded
expect reload "systemctl reload rc=$rc, reload_ok $reloads -> $(count reload_ok)" test "$(count reload_ok)" -gt "$reloads"
if ping_lo; then check reload-verdict FAIL "ping ::1 still passes after the reload"
else check reload-verdict ok "ping ::1 dropped by the reloaded table"; fi
# `stats` lists a rule under "rule hits" once it has judged a packet.
hits=$(stats | grep 'lane-drop-echo (user, drop)' | tr -s ' ')
expect reload-stats "stats:${hits:- no hits on lane-drop-echo}" test -n "$hits"
rm -f "$drop_in"
reloads=$(count reload_ok)
systemctl reload "$unit"
wait_for "$limit" reloaded
expect reload-back "reload without the drop-in: ping ::1 passes again" wait_for 5 ping_lo

# 4. The watchdog: a stopped daemon sends no WATCHDOG=1; systemd aborts it after WatchdogSec
# (then kills it after TimeoutAbortSec) and Restart=on-failure starts a new one.
restarts=$(prop NRestarts)
expect no-spurious-restart "NRestarts=$restarts before SIGSTOP" test "$restarts" = 0
pid=$(prop MainPID)
restarted() { [ "$(prop NRestarts)" -gt "$restarts" ] && [ "$(prop MainPID)" != "$pid" ] \
	&& systemctl is-active -q "$unit"; }
kill -STOP "$pid"
# WatchdogSec (20 s) + TimeoutAbortSec (= TimeoutStopSec, 20 s: SIGABRT waits while the
# process is stopped, SIGKILL does not) + RestartSec + a start under emulation.
wait_for $((60 + limit)) restarted
now="NRestarts $restarts -> $(prop NRestarts), MainPID $pid -> $(prop MainPID), $(prop ActiveState)"
expect watchdog-restart "$now" restarted
watchdog_logged() { journalctl -u "$unit" --no-pager | grep -qi 'watchdog timeout'; }
expect watchdog-logged "systemd logged the watchdog timeout" watchdog_logged
expect after-restart "ping ::1 judged and passing after the restart" wait_for 5 ping_lo

# 5. Stop: the diversion goes with the daemon.
systemctl stop "$unit"
stopped() { ! systemctl is-active -q "$unit" && no_rules; }
expect stop "$(prop ActiveState), lines of ours in nft/ip6tables: $(our_rules | paste -sd/)" stopped
expect stop-events "journal: stopped, diversion_removed" has_events stopped diversion_removed

# 6. The admin's `disable` outlives a reinstall (deb-systemd-helper's was-enabled).
systemctl disable -q "$unit"
apt-get install -y -q --reinstall "./$deb" > /tmp/systemd-checks-apt2.log 2>&1; rc=$?
kept_disabled() { [ "$rc" = 0 ] && [ "$(systemctl is-enabled "$unit")" = disabled ] \
	&& ! systemctl is-active -q "$unit"; }
expect disable-kept "reinstall rc=$rc: $(systemctl is-enabled "$unit" 2>&1), $(prop ActiveState)" kept_disabled

# 7. Purge while it runs: prerm stops it, nothing of the package or its state stays.
systemctl start "$unit"
apt-get purge -y -q icmp6-shim > /tmp/systemd-checks-purge.log 2>&1; rc=$?
left=""
for f in /etc/icmp6-shim /usr/lib/icmp6-shim /usr/bin/icmp6-shim /lib/systemd/system/$unit \
	/etc/systemd/system/multi-user.target.wants/$unit \
	/var/lib/systemd/deb-systemd-helper-enabled/$unit.dsh-also \
	/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/$unit \
	/var/lib/systemd/deb-systemd-helper-masked/$unit; do
	[ -e "$f" ] || [ -L "$f" ] && left="$left $f"
done
[ "$(nft list ruleset | grep -c icmp6_shim)" = 0 ] || left="$left nft:icmp6_shim"
dpkg-query -W -f='${Status}' icmp6-shim 2>/dev/null | grep -q installed && left="$left dpkg:icmp6-shim"
systemctl is-active -q "$unit" && left="$left still-active"
expect purge "apt-get purge rc=$rc, left:${left:- nothing}" test "$rc" = 0 -a -z "$left"

if [ "$failed" = 0 ]; then check summary ok "$passed of $((passed + failed)) ok"
else check summary FAIL "$passed of $((passed + failed)) ok"; fi
[ "$failed" = 0 ]
