#!/bin/bash
# Remove Guardian DNS installed by install.sh, as root:
#
#     sudo /opt/guardian-dns/app/deploy/raspberrypi/uninstall.sh [--purge]
#
# Stops and removes the service, the code and venv in /opt/guardian-dns, the command link, the
# bypass firewall rules if they were loaded, and undoes the port-53 fixes install.sh applied
# (systemd-resolved's stub listener and dnsmasq's DNS come back). The config
# (/etc/guardian-dns) and the state (/var/lib/guardian-dns: budgets, overrides, the saved domain
# table) are kept, so a later install picks up where this one left off; --purge removes them,
# the guardian-dns user and the guardian-admin group too.
set -euo pipefail

PREFIX=/opt/guardian-dns
ETC=/etc/guardian-dns
STATE=/var/lib/guardian-dns
UNIT=guardian-dns.service
BYPASS_UNIT=guardian-dns-bypass.service
BIN_LINK=/usr/local/bin/guardian-dns
RESOLVED_DROPIN=/etc/systemd/resolved.conf.d/90-guardian-dns.conf
DNSMASQ_DROPIN=/etc/dnsmasq.d/90-guardian-dns.conf
PURGE=no

say() { printf '%s\n' "guardian-dns uninstall: $*"; }
die() { printf '%s\n' "guardian-dns uninstall: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --purge) PURGE=yes; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option: $1 (only --purge)" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "run as root (sudo $0)"

systemd_running() { [ -d /run/systemd/system ]; }

for unit in "$BYPASS_UNIT" "$UNIT"; do
  if [ -e "/etc/systemd/system/$unit" ]; then
    if systemd_running; then
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    else
      systemctl disable "$unit" >/dev/null 2>&1 || true
    fi
    rm -f "/etc/systemd/system/$unit"
    say "service $unit removed"
  fi
done
# The bypass rules live in their own table: deleting it leaves every other rule alone.
if command -v nft >/dev/null && nft list table inet guardian_dns_bypass >/dev/null 2>&1; then
  nft delete table inet guardian_dns_bypass
  say "bypass firewall rules removed"
fi

if [ -e "$RESOLVED_DROPIN" ]; then
  rm -f "$RESOLVED_DROPIN"
  if [ -s "$PREFIX/resolv.conf.link" ]; then
    ln -sfn "$(cat "$PREFIX/resolv.conf.link")" /etc/resolv.conf
  fi
  if systemd_running; then systemctl restart systemd-resolved || true; fi
  say "systemd-resolved's stub listener is back"
fi
if [ -e "$DNSMASQ_DROPIN" ]; then
  rm -f "$DNSMASQ_DROPIN"
  if systemd_running; then systemctl restart dnsmasq || true; fi
  say "dnsmasq answers DNS again"
fi

if [ -L "$BIN_LINK" ]; then rm -f "$BIN_LINK"; fi
rm -f /usr/share/bash-completion/completions/guardian-dns
if [ -d "$PREFIX" ]; then
  rm -rf "$PREFIX"
  say "$PREFIX removed"
fi
if systemd_running; then systemctl daemon-reload; fi

if [ "$PURGE" = yes ]; then
  rm -rf "$ETC" "$STATE" /run/guardian-dns
  if getent passwd guardian-dns >/dev/null; then userdel guardian-dns; fi
  if getent group guardian-dns >/dev/null; then groupdel guardian-dns; fi
  if getent group guardian-admin >/dev/null; then groupdel guardian-admin; fi
  say "config, state, the guardian-dns user and the guardian-admin group removed"
else
  say "kept: $ETC (config) and $STATE (state); --purge removes them"
fi
say "done. Point your router's DHCP DNS server back at the router (or your ISP) if it named this Pi."
