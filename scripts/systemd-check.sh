#!/usr/bin/env bash
# Live check of the installed service under a real systemd (252, Debian
# bookworm) booted as PID 1 of a systemd-nspawn container, as on a device:
#   scripts/systemd-check.sh BUNDLE_DIR        (make systemd-check builds it)
# The rootfs is made once with debootstrap and cached in .systemd-check/
# (git-ignored); each run boots it with --volatile=overlay, so what the run
# installs is gone at poweroff. The bundle is installed with its install.sh
# exactly as the README says, then, live: start returns after READY, a
# shared model answers `edge-agent call infer`, reload keeps the MainPID, a
# SIGSTOPped agent is restarted by the watchdog, stop ends with
# Result=success and a retained "offline" status, and the unit's
# `systemd-analyze security` exposure is printed. Any miss fails the run.
# Recipe and limits: ../shared/docs/systemd-live.md.
set -euo pipefail

bundle=$(cd "${1:?usage: scripts/systemd-check.sh BUNDLE_DIR}" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
models=${EDGE_AGENT_MODELS:-$repo/../shared/models}
cache=${SYSTEMD_CHECK_CACHE:-$repo/.systemd-check}
rootfs=$cache/rootfs-bookworm
# The unit's WatchdogSec=30s would make the check wait 30 s; a drop-in
# shortens it for the check only.
watchdog=5
model=mobilenet_v2_1.0_224_quant
t_begin=$(date +%s.%N)

say() { echo "systemd-check: $*"; }
fail() {
  echo "systemd-check: FAIL: $*" >&2
  if [[ -n ${X:-} ]]; then
    $X journalctl -u edge-agent --no-pager -n 40 >&2 || true
  fi
  exit 1
}
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}'; }

[[ $(id -u) -eq 0 ]] || { echo "systemd-check: needs root (nspawn, debootstrap)" >&2; exit 1; }
[[ -x $bundle/install.sh && -x $bundle/bin/edge-agent ]] || fail "$bundle is not an unpacked bundle"
[[ -f $models/$model.tflite && -f $models/cat.bmp ]] || fail "the shared models are missing ($models): CI has ../shared beside the checkout"
"$repo/scripts/deps.sh" systemd-container debootstrap mosquitto mosquitto-clients

if [[ ! -d $rootfs ]]; then
  # The mirror apt already uses here (never a hard-coded host).
  mirror=$( (awk '/^URIs:/{print $2}' /etc/apt/sources.list.d/*.sources; awk '/^deb /{print $2}' /etc/apt/sources.list) 2>/dev/null | grep -m1 '/debian/*$' || true)
  [[ -n $mirror ]] || fail "no Debian mirror in the apt configuration"
  say "creating the bookworm rootfs in $rootfs (debootstrap, once)"
  t=$(date +%s.%N)
  rm -rf "$rootfs.new"
  mkdir -p "$cache"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps bookworm "$rootfs.new" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    { tail -20 "$cache/debootstrap.log" >&2; fail "debootstrap"; }
  mv "$rootfs.new" "$rootfs"
  say "rootfs made in $(since "$t") s"
fi

work=$(mktemp -d)
NSPID= CPID= X= BROKER=
cleanup() {
  set +e
  if [[ -n $CPID ]] && kill -0 "$CPID" 2>/dev/null; then
    nsenter -t "$CPID" -a -- systemctl poweroff >/dev/null 2>&1
  fi
  if [[ -n $NSPID ]]; then
    for _ in $(seq 100); do kill -0 "$NSPID" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$NSPID" 2>/dev/null && { echo "systemd-check: the container did not power off; killing it" >&2; kill -KILL "$NSPID"; }
    wait "$NSPID" 2>/dev/null
  fi
  [[ -n $BROKER ]] && kill "$BROKER" 2>/dev/null && wait "$BROKER" 2>/dev/null
  # nspawn leaves its empty payload/supervisor cgroups behind, below this
  # script's own cgroup in each hierarchy.
  while IFS=: read -r _ ctrl path; do
    case $ctrl in
      name=systemd) base=/sys/fs/cgroup/systemd ;;
      "") base=/sys/fs/cgroup/unified; [[ -d $base ]] || base=/sys/fs/cgroup ;;
      *) continue ;;
    esac
    for d in payload supervisor; do
      [[ -d $base$path/$d ]] && find "$base$path/$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
  done </proc/self/cgroup
  rm -rf "$work"
}
trap cleanup EXIT

say "booting systemd in a container"
t=$(date +%s.%N)
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 setsid systemd-nspawn --boot --directory="$rootfs" --volatile=overlay \
  --machine=edgecheck --register=no --keep-unit --console=read-only --system-call-filter=bpf --private-network \
  --bind-ro="$bundle":/mnt/bundle --bind-ro="$(cd "$models" && pwd)":/mnt/models >"$work/console.log" 2>&1 </dev/null &
NSPID=$!
for _ in $(seq 300); do CPID=$(pgrep -P "$NSPID" -x systemd || true); [[ -n $CPID ]] && break; kill -0 "$NSPID" 2>/dev/null || break; sleep 0.1; done
[[ -n $CPID ]] || { cat "$work/console.log" >&2; fail "nspawn did not start systemd"; }
for _ in $(seq 300); do [[ -S /proc/$CPID/root/run/systemd/private ]] && break; sleep 0.1; done
X="nsenter -t $CPID -a --"
state=$($X systemctl is-system-running --wait || true)
[[ $state == running || $state == degraded ]] || fail "the container's systemd is $state"
say "systemd $($X systemctl --version | awk 'NR==1{print $2}') running in $(since "$t") s ($state)"

# A broker on the container's loopback (its own network namespace), run from
# the host: the agent connects to it as to a remote broker, and it keeps the
# retained status after the agent stops.
printf 'listener 1883 127.0.0.1\nallow_anonymous true\npersistence false\n' >"$work/mosquitto.conf"
nsenter -t "$CPID" -n -- mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
BROKER=$!
for _ in $(seq 50); do nsenter -t "$CPID" -n -- bash -c ': </dev/tcp/127.0.0.1/1883' 2>/dev/null && break; sleep 0.1; done
status() { nsenter -t "$CPID" -n -- mosquitto_sub -h 127.0.0.1 -t 'edge/+/status' -C 1 -W 5 2>/dev/null || true; }
show() { $X systemctl show -P "$1" edge-agent; }

# 1. An install whose service cannot start (a password with no username)
# fails loudly and leaves the unit stopped and disabled, not restarting.
$X install -d -m 0755 /etc/edge-agent
echo s3cret | $X install -m 0600 /dev/stdin /etc/edge-agent/mqtt-password
t=$(date +%s.%N)
if $X /mnt/bundle/install.sh >"$work/install-bad.log" 2>&1; then
  cat "$work/install-bad.log" >&2; fail "install.sh succeeded with a service that cannot start"
fi
grep -q 'mqtt.username is empty' "$work/install-bad.log" || { cat "$work/install-bad.log" >&2; fail "install.sh did not show the journal's reason"; }
enabled=$($X systemctl is-enabled edge-agent || true)
[[ $enabled == disabled ]] || fail "after a failed install the unit is $enabled"
sleep 3 # > RestartSec: a restart loop would show now
active=$($X systemctl is-active edge-agent || true)
[[ $active == inactive || $active == failed ]] || fail "after a failed install the unit is $active"
say "install.sh with a broken configuration: exit 1 in $(since "$t") s, journal shown, unit $enabled and $active"
# Started by hand anyway, the broken service stops being restarted at the
# unit's start limit instead of looping.
t=$(date +%s.%N)
$X systemctl start edge-agent >/dev/null 2>&1 || true
limited() { $X journalctl -u edge-agent --no-pager -o cat | grep 'Start request repeated too quickly' >/dev/null; }
for _ in $(seq 600); do limited && break; sleep 0.1; done
limited || fail "a failing service did not hit its start limit within 60 s ($(show ActiveState), NRestarts $(show NRestarts))"
n=$(show NRestarts)
sleep 3 # > RestartSec
[[ $(show ActiveState) == failed && $(show NRestarts) == "$n" ]] ||
  fail "after its start limit the service is $(show ActiveState), NRestarts $n → $(show NRestarts)"
say "the broken service, started by hand, hit its start limit after $(since "$t") s and stays failed (NRestarts $n)"
$X truncate -s 0 /etc/edge-agent/mqtt-password

# 2. The install the README documents; it must leave the service active.
t=$(date +%s.%N)
$X /mnt/bundle/install.sh || fail "install.sh exited $?"
[[ $(show ActiveState) == active && $($X systemctl is-enabled edge-agent) == enabled ]] || fail "installed but not active and enabled"
say "install.sh: active in $(since "$t") s"

# 3. A shared model, configured for the installed service: copied into a
# models folder the unit can read, the config pointing at it.
$X install -d -o edge-agent -g edge-agent -m 0750 /var/lib/edge-agent/models
$X install -o edge-agent -g edge-agent -m 0640 /mnt/models/$model.tflite /var/lib/edge-agent/models/
$X sed -i 's|^# *models_dir = .*|models_dir = "/var/lib/edge-agent/models"|' /etc/edge-agent/edge-agent.toml
$X grep -q '^models_dir = "/var/lib/edge-agent/models"' /etc/edge-agent/edge-agent.toml || fail "models_dir not set in the installed config"
$X mkdir -p /etc/systemd/system/edge-agent.service.d
printf '[Service]\nWatchdogSec=%ss\n%s\n' "$watchdog" "${SYSTEMD_CHECK_DROPIN:-}" | $X tee /etc/systemd/system/edge-agent.service.d/check.conf >/dev/null
$X systemctl daemon-reload
say "WatchdogSec shortened to ${watchdog}s by a drop-in, for this check only (the unit ships 30s)"
# SYSTEMD_CHECK_DROPIN adds [Service] lines to that drop-in: a way to try a
# sandbox option live before it goes into the unit.
[[ -z ${SYSTEMD_CHECK_DROPIN:-} ]] || say "drop-in also sets: ${SYSTEMD_CHECK_DROPIN//$'\n'/, }"
$X systemctl stop edge-agent

# 4. start returns after READY (Type=notify) with the unit active.
t=$(date +%s.%N)
$X systemctl start edge-agent || fail "systemctl start failed"
ready=$(since "$t")
[[ $(show ActiveState) == active && $(show SubState) == running ]] || fail "not active after start"
say "systemctl start returned after READY in $ready s; active ($(show StatusText))"

# 5. The model answers inside the container.
out=$($X /opt/edge-agent/bin/edge-agent call infer --model $model --image /mnt/models/cat.bmp --top 1 \
  --config /etc/edge-agent/edge-agent.toml --json 2>&1) || fail "call infer: $out"
top1=$(tr -d ' \n' <<<"$out" | grep -o '"index":[0-9]*' | head -1 | cut -d: -f2 || true)
[[ $top1 == 286 ]] || fail "call infer: top-1 ${top1:-none}, want 286: $out"
say "call infer $model cat.bmp: top-1 $top1"

# The agent still sees the machine through the sandbox: available memory
# comes from /proc/meminfo (what ProcSubset=pid would hide).
st=$($X /opt/edge-agent/bin/edge-agent call status --config /etc/edge-agent/edge-agent.toml --json 2>&1) || fail "call status: $st"
mem=$(tr -d ' \n' <<<"$st" | grep -o '"mem_available_bytes":[0-9]*' | head -1 | cut -d: -f2 || true)
[[ ${mem:-0} -gt 0 ]] || fail "call status: the agent does not see the machine's available memory (/proc/meminfo)"
say "call status: the agent sees $((mem >> 20)) MiB available"

# 6. reload keeps the main process.
pid=$(show MainPID)
$X systemctl reload edge-agent || fail "systemctl reload failed"
[[ $(show MainPID) == "$pid" && $(show ActiveState) == active ]] || fail "reload changed MainPID $pid → $(show MainPID)"
say "systemctl reload: MainPID $pid kept"

# 7. A stopped agent stops pinging: the watchdog restarts it.
restarts=$(show NRestarts)
t=$(date +%s.%N)
$X systemctl kill -s SIGSTOP --kill-who=main edge-agent
# The margin: RestartSec=2s, the start itself, and a loaded machine.
limit=$((watchdog + 15))
fired=
for _ in $(seq $((limit * 10))); do
  [[ -z $fired && $(show SubState) != running ]] && fired=$(since "$t")
  [[ $(show NRestarts) -gt $restarts && $(show ActiveState) == active ]] && break
  sleep 0.1
done
[[ $(show NRestarts) == $((restarts + 1)) && $(show ActiveState) == active ]] ||
  fail "no watchdog restart within ${limit}s (NRestarts $(show NRestarts), $(show ActiveState))"
[[ $(show MainPID) != "$pid" ]] || fail "the stopped process is still the main one"
say "kill -STOP: the watchdog killed it after ${fired:-?} s, active again after $(since "$t") s (WatchdogSec=${watchdog}s, RestartSec=2s, NRestarts $restarts → $(show NRestarts))"
$X journalctl -u edge-agent --no-pager -o cat | grep "Failed with result 'watchdog'" >/dev/null || fail "the journal does not say the watchdog fired"

# 8. stop is clean and the retained status says offline.
[[ $(status) == *'"status":"online"'* ]] || fail "no retained online status before stop: $(status)"
$X systemctl stop edge-agent
[[ $(show Result) == success ]] || fail "stop: Result=$(show Result)"
st=$(status)
[[ $st == *'"status":"offline"'* ]] || fail "retained status after stop: ${st:-none}"
say "systemctl stop: Result=success; retained status offline"

# The sandbox refused nothing the agent tried (a refused system call is
# EPERM, a hidden file ENOENT or EACCES: each shows up as a logged error).
if $X journalctl -u edge-agent --no-pager -o cat | grep -E -i 'operation not permitted|permission denied|bad system call|no such file or directory|read-only file system' >"$work/denied.txt"; then
  cat "$work/denied.txt" >&2
  fail "the agent logged errors the sandbox may cause (above)"
fi
say "the journal shows nothing the sandbox refused"

# 9. The sandbox's exposure.
$X systemd-analyze security edge-agent --no-pager >"$work/security.txt" 2>&1 || true
grep -E '^✗' "$work/security.txt" | sed 's/^/systemd-check:   /' || true
score=$(grep -o 'Overall exposure level for edge-agent.service: .*' "$work/security.txt" | sed 's/.*: //')
[[ -n $score ]] || { cat "$work/security.txt" >&2; fail "no systemd-analyze security score"; }
say "systemd-analyze security: exposure $score"

# 10. uninstall --purge leaves no unit, user or state behind (the check's
# own drop-in goes first).
$X rm -rf /etc/systemd/system/edge-agent.service.d
$X /mnt/bundle/uninstall.sh --purge >/dev/null || fail "uninstall.sh --purge exited $?"
$X systemctl daemon-reload
[[ $(show LoadState) == not-found ]] || fail "after uninstall the unit is $(show LoadState)"
! $X getent passwd edge-agent >/dev/null || fail "after uninstall --purge the edge-agent user is still there"
$X test ! -e /var/lib/edge-agent -a ! -e /etc/edge-agent -a ! -e /opt/edge-agent || fail "uninstall --purge left files"
say "uninstall.sh --purge: unit, user, state and configuration gone"

say "all checks passed in $(since "$t_begin") s"
