#!/usr/bin/env bash
# Remove edge-agent: sudo ./uninstall.sh [--prefix /opt/edge-agent] [--purge] [--root DIR]
# Keeps the state (/var/lib/edge-agent), the configuration and the user
# unless --purge is given.
set -euo pipefail

prefix=/opt/edge-agent
root=
purge=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --prefix) prefix=$2; shift 2 ;;
    --root) root=$2; shift 2 ;;
    --purge) purge=1; shift ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) echo "uninstall.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ -z $root && $(id -u) -ne 0 ]]; then
  echo "uninstall.sh: run as root (or use --root DIR)" >&2
  exit 1
fi
# The prefix is removed whole: never "/" or relative.
if [[ $prefix != /?* || $prefix == *..* || $prefix =~ ^/+$ ]]; then
  echo "uninstall.sh: --prefix must be an absolute folder other than / (got '$prefix')" >&2
  exit 2
fi
if [[ -z $root ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  systemctl disable --now edge-agent.service 2>/dev/null || true
fi
# With --purge Home Assistant forgets the device too (empty retained
# discovery configs), while the binary and its configuration are still here.
# Best effort: a broker that cannot be reached only leaves stale entities.
if [[ $purge == 1 && -x "$root$prefix/bin/edge-agent" ]]; then
  conf=()
  [[ -f "$root/etc/edge-agent/edge-agent.toml" ]] && conf=(--config "$root/etc/edge-agent/edge-agent.toml")
  "$root$prefix/bin/edge-agent" homeassistant remove --if-enabled "${conf[@]}" --timeout 5s || \
    echo "uninstall.sh: Home Assistant discovery not removed (broker unreachable?)" >&2
fi
rm -f "$root/etc/systemd/system/edge-agent.service"
rm -rf "$root$prefix"
if [[ -z $root ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
fi
if [[ $purge == 1 ]]; then
  rm -rf "$root/var/lib/edge-agent" "$root/etc/edge-agent"
  if [[ -z $root ]] && getent passwd edge-agent >/dev/null; then
    userdel edge-agent
  fi
  echo "edge-agent removed with its state and configuration"
else
  echo "edge-agent removed; state in /var/lib/edge-agent and /etc/edge-agent kept (--purge removes them)"
fi
