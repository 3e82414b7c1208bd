#!/bin/bash
# Install or upgrade Guardian DNS on Raspberry Pi OS or Debian (Bookworm: Python 3.11; Trixie:
# Python 3.13), as root, from this checkout:
#
#     sudo deploy/raspberrypi/install.sh [--listen ADDR] [--fix-port53] [--no-start]
#
# Idempotent: run it again to upgrade. What it does, in order:
#   1. Debian packages for the runtime (python3-dnslib, -yaml, -requests, -cryptography,
#      -prometheus-client, and -uvloop where it is 0.18 or later; tzdata, iproute2): only the missing ones, with apt-get.
#   2. The system user guardian-dns (runs the server) and the group guardian-admin (may edit the
#      config and run the admin verbs: allow, pause, explain, ...; the user who ran sudo joins it).
#   3. The code in /opt/guardian-dns/app (replaced whole on upgrade) and a venv in
#      /opt/guardian-dns/venv made with --system-site-packages, so the Debian packages above are
#      used and pip never touches the system Python (PEP 668). /usr/local/bin/guardian-dns.
#   4. /etc/guardian-dns/guardian.yaml, written only when there is none: an existing config is
#      never overwritten; a newer default goes beside it as guardian.yaml.dpkg-dist.
#   5. The systemd unit (state in /var/lib/guardian-dns, control socket in /run/guardian-dns),
#      enabled; then a port-53 check (systemd-resolved's stub, dnsmasq, anything else) that
#      explains the conflict and, with --fix-port53 or a "yes" at the prompt, applies the fix
#      Pi-hole uses; then (re)start and a test query.
# uninstall.sh beside this file undoes it (config and state are kept unless --purge).
set -euo pipefail

PREFIX=/opt/guardian-dns
ETC=/etc/guardian-dns
CONFIG=$ETC/guardian.yaml
STATE=/var/lib/guardian-dns
UNIT_DIR=/etc/systemd/system
UNIT=guardian-dns.service
SVC_USER=guardian-dns
ADMIN_GROUP=guardian-admin
BIN_LINK=/usr/local/bin/guardian-dns
COMPLETION=/usr/share/bash-completion/completions/guardian-dns
RESOLVED_DROPIN=/etc/systemd/resolved.conf.d/90-guardian-dns.conf
DNSMASQ_DROPIN=/etc/dnsmasq.d/90-guardian-dns.conf
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEBIAN_PACKAGES=(python3 python3-venv python3-dnslib python3-yaml python3-requests
  python3-cryptography python3-prometheus-client tzdata iproute2 ca-certificates)
# uvloop makes the server faster, but the server needs uvloop.run (0.18 and later): Bookworm has
# 0.17, so it is installed only where the release's package is new enough (Trixie: 0.21).
UVLOOP_MIN=0.18
# Modules the code imports that a Debian package above provides; pip fills in only what is missing
# (PyPI name in brackets), e.g. on a release that lacks one of the packages.
PY_MODULES=(dnslib:dnslib yaml:pyyaml requests:requests cryptography:cryptography
  prometheus_client:prometheus-client)

DEBIAN_PACKAGES_EXTRA=()
LISTEN=""
FIX_PORT53=ask
START=yes
BYPASS=""

say() { printf '%s\n' "guardian-dns install: $*"; }
die() { printf '%s\n' "guardian-dns install: error: $*" >&2; exit 1; }

usage() {
  cat <<'EOF'
Usage: install.sh [--listen ADDR] [--fix-port53 | --no-fix-port53] [--no-start]
                  [--bypass IFACE[,IFACE...]]

  --listen ADDR     the LAN address to answer on (default: the address of the interface that
                    has the default route); 127.0.0.1 is always added for the Pi itself
  --fix-port53      if another DNS server holds port 53, apply the fix without asking
                    (systemd-resolved: stub listener off; dnsmasq: its DNS off, DHCP kept)
  --no-fix-port53   never change another service; explain and stop instead
  --no-start        install and enable, but do not start (images, chroots)
  --bypass IFACES   also install the bypass firewall rules (bypass.nft: LAN port 53 redirected
                    here, DNS over TLS refused) for these LAN interfaces; only where the LAN's
                    traffic passes through this machine (README.md, "Bypass kit")
EOF
}

while [ $# -gt 0 ]; do
  case $1 in
    --listen) [ $# -ge 2 ] || die "--listen needs an address"; LISTEN=$2; shift 2 ;;
    --listen=*) LISTEN=${1#*=}; shift ;;
    --fix-port53) FIX_PORT53=yes; shift ;;
    --no-fix-port53) FIX_PORT53=no; shift ;;
    --no-start) START=no; shift ;;
    --bypass) [ $# -ge 2 ] || die "--bypass needs interface names"; BYPASS=$2; shift 2 ;;
    --bypass=*) BYPASS=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "run as root (sudo $0)"
[ -f "$SRC/guardian_dns/__init__.py" ] || die "$SRC is not a Guardian DNS checkout"

# systemd is PID 1 on a booted Pi; not in a chroot or a container build.
systemd_running() { [ -d /run/systemd/system ]; }

# --- 1. Debian packages ----------------------------------------------------------------------
case "$BYPASS" in
  *[!A-Za-z0-9_.,@-]*) die "--bypass: interface names are letters, digits and . _ - @, comma-separated" ;;
esac
[ -z "$BYPASS" ] || DEBIAN_PACKAGES_EXTRA=(nftables)

check_release() {
  local id="" codename=""
  if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    id=$(. /etc/os-release && echo "${ID:-}")
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  fi
  case "$id:$codename" in
    debian:bookworm|debian:trixie|raspbian:bookworm|raspbian:trixie) ;;
    *) say "warning: tested on Debian/Raspberry Pi OS bookworm and trixie, this is ${id:-?} ${codename:-?}" ;;
  esac
}

install_packages() {
  local missing=() p candidate
  DEBIAN_PACKAGES+=("${DEBIAN_PACKAGES_EXTRA[@]}")
  candidate=$(apt-cache policy python3-uvloop 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [ -n "$candidate" ] && [ "$candidate" != "(none)" ] \
    && dpkg --compare-versions "$candidate" ge "$UVLOOP_MIN"; then
    DEBIAN_PACKAGES+=(python3-uvloop)
  fi
  for p in "${DEBIAN_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
      missing+=("$p")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    say "Debian packages: all present"
    return
  fi
  say "Debian packages: installing ${missing[*]}"
  apt-get update -q
  # Packages a release does not have (python3-dnslib on an old one) are left to pip below.
  local available=()
  for p in "${missing[@]}"; do
    if apt-cache show "$p" >/dev/null 2>&1; then available+=("$p"); fi
  done
  [ ${#available[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${available[@]}"
  command -v python3 >/dev/null || die "python3 could not be installed"
}

check_python() {
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "Python 3.11 or later is needed, this is $(python3 -V 2>&1)"
}

# --- 2. users --------------------------------------------------------------------------------
create_users() {
  getent group "$ADMIN_GROUP" >/dev/null || groupadd --system "$ADMIN_GROUP"
  if ! getent passwd "$SVC_USER" >/dev/null; then
    useradd --system --user-group --home-dir "$STATE" --no-create-home \
      --shell /usr/sbin/nologin --comment "Guardian DNS" "$SVC_USER"
  fi
  # The server reads the config through the admin group (the unit runs with Group=guardian-admin).
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && getent passwd "$SUDO_USER" >/dev/null \
    && ! id -nG "$SUDO_USER" | tr ' ' '\n' | grep -qx "$ADMIN_GROUP"; then
    usermod -a -G "$ADMIN_GROUP" "$SUDO_USER"
    say "added $SUDO_USER to $ADMIN_GROUP (log in again to use the admin verbs without sudo)"
  fi
}

# --- 3. code and venv ------------------------------------------------------------------------
install_code() {
  install -d -m 0755 "$PREFIX"
  local new=$PREFIX/app.new
  rm -rf "$new"
  install -d -m 0755 "$new"
  # The package finds its bundled lists beside itself (blocklists/ next to guardian_dns/), so
  # the tree is installed as it is in the checkout rather than as a wheel.
  local item
  for item in guardian_dns blocklists config deploy docs README.md setup.cfg pyproject.toml; do
    [ -e "$SRC/$item" ] && cp -a "$SRC/$item" "$new/"
  done
  find "$new" -name __pycache__ -prune -exec rm -rf {} +
  chown -R root:root "$new"
  chmod -R u=rwX,go=rX "$new"
  rm -rf "$PREFIX/app.old"
  [ -d "$PREFIX/app" ] && mv "$PREFIX/app" "$PREFIX/app.old"
  mv "$new" "$PREFIX/app"
  rm -rf "$PREFIX/app.old"

  local venv=$PREFIX/venv
  # A venv outlives neither a Python upgrade (Bookworm -> Trixie) nor a missing interpreter.
  if [ -x "$venv/bin/python3" ] && [ "$("$venv/bin/python3" -c 'import sys; print(sys.version_info[:2])' 2>/dev/null)" \
    = "$(python3 -c 'import sys; print(sys.version_info[:2])')" ]; then
    say "venv: $venv kept"
  else
    rm -rf "$venv"
    python3 -m venv --system-site-packages "$venv" || die "python3 -m venv failed (apt-get install python3-venv)"
    say "venv: $venv created (--system-site-packages)"
  fi
  local site
  site=$("$venv/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  printf '%s\n' "$PREFIX/app" >"$site/guardian_dns.pth"
  local pair missing=()
  for pair in "${PY_MODULES[@]}"; do
    "$venv/bin/python3" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "pip (into the venv only): ${missing[*]}"
    "$venv/bin/python3" -m pip install -q "${missing[@]}"
  fi
  # An older uvloop installed for something else (it is visible through the system site
  # packages) lacks uvloop.run: then the server is told to use asyncio's own loop.
  local loop=""
  if "$venv/bin/python3" -c 'import uvloop' 2>/dev/null \
    && ! "$venv/bin/python3" -c 'import uvloop; uvloop.run' 2>/dev/null; then
    # shellcheck disable=SC2016 # expanded by the wrapper when it runs, not here
    loop='GUARDIAN_DNS_LOOP=${GUARDIAN_DNS_LOOP:-asyncio} '
    say "uvloop: too old for the server (needs $UVLOOP_MIN), using asyncio's event loop"
  fi
  cat >"$venv/bin/guardian-dns" <<EOF
#!/bin/sh
${loop:+export }${loop}
exec $venv/bin/python3 -m guardian_dns "\$@"
EOF
  chmod 0755 "$venv/bin/guardian-dns"
  ln -sfn "$venv/bin/guardian-dns" "$BIN_LINK"
  if [ -f "$SRC/deploy/bash-completion/guardian-dns" ]; then
    install -D -m 0644 "$SRC/deploy/bash-completion/guardian-dns" "$COMPLETION"
  fi
  # Compiled now: the service may not write under /opt (ProtectSystem=strict).
  "$venv/bin/python3" -m compileall -q "$PREFIX/app/guardian_dns" >/dev/null
  say "code: $PREFIX/app ($("$venv/bin/python3" -c 'import guardian_dns; print(guardian_dns.__version__)'))"
}

# --- 4. config -------------------------------------------------------------------------------
# The LAN address and network to serve: from --listen, else the default route's interface.
detect_lan() {
  local dev="" cidr=""
  if [ -n "$LISTEN" ]; then
    cidr=$(ip -o -4 addr show 2>/dev/null | awk -v a="$LISTEN" '{split($4, p, "/"); if (p[1] == a) {print $4; exit}}')
    [ -n "$cidr" ] || cidr="$LISTEN/32"
  else
    dev=$(ip -4 route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')
    [ -n "$dev" ] && cidr=$(ip -o -4 addr show dev "$dev" scope global 2>/dev/null | awk '{print $4; exit}')
  fi
  [ -n "$cidr" ] || return 0
  python3 - "$cidr" <<'EOF'
import ipaddress, sys
iface = ipaddress.ip_interface(sys.argv[1])
print(iface.ip, iface.network)
EOF
}

write_default_config() {
  local out=$1 lan_ip=$2 lan_net=$3 lists=$PREFIX/app/blocklists
  {
    cat <<EOF
# Guardian DNS on this Raspberry Pi, written by deploy/raspberrypi/install.sh.
# Every key and its default: $PREFIX/app/docs/configuration.md (and config/guardian.yaml there).
# Check after editing, then reload:
#     guardian-dns check-config $CONFIG && sudo systemctl reload guardian-dns

server:
  listen:
EOF
    [ -n "$lan_ip" ] && printf '    - "%s:53"\n' "$lan_ip"
    cat <<EOF
    - "127.0.0.1:53"
  # Who may ask: this Pi, the LAN it is on, and IPv6 link-local and ULA addresses.
  allow_networks:
    - "127.0.0.0/8"
    - "::1/128"
EOF
    [ -n "$lan_net" ] && printf '    - "%s"\n' "$lan_net"
    cat <<EOF
    - "fe80::/10"
    - "fc00::/7"
  # Written out (rather than left to systemd's environment) so that the admin verbs run from a
  # shell (guardian-dns status, pause, allow, ...) find the same state and socket as the service.
  state_dir: $STATE
  control_socket: /run/guardian-dns/control.sock
  control_group: $ADMIN_GROUP

upstream:
  # Empty: the servers in /etc/resolv.conf (usually the router), skipping this Pi itself.
  servers: []

cache:
  # Answers kept. 10,000 is plenty for a household and costs about 10 MiB; see
  # $PREFIX/app/deploy/raspberrypi/README.md ("Memory") before raising it on a 512 MB board.
  size: 10000

blocking:
  lists:
    - adult=$lists/adult.hosts
    - gambling=$lists/gambling.hosts
    - bypass=$lists/bypass.txt
    - bypass=$lists/bypass-ut1-doh.txt
    - scam=$lists/scam.txt

query_log:
  size: 5000
EOF
  } >"$out"
}

install_config() {
  # The config directory belongs to the admin group: its members edit the config without sudo.
  install -d -m 2775 -o root -g "$ADMIN_GROUP" "$ETC"
  local lan lan_ip="" lan_net="" tmp
  lan=$(detect_lan)
  if [ -n "$lan" ]; then
    lan_ip=${lan%% *}
    lan_net=${lan#* }
  fi
  tmp=$(mktemp "$ETC/.guardian.yaml.XXXXXX")
  write_default_config "$tmp" "$lan_ip" "$lan_net"
  chown root:"$ADMIN_GROUP" "$tmp"
  chmod 0664 "$tmp"
  if [ ! -e "$CONFIG" ]; then
    mv "$tmp" "$CONFIG"
    say "config: $CONFIG written (listening on ${lan_ip:-loopback only}${lan_ip:+ and 127.0.0.1}, port 53)"
    [ -n "$lan_ip" ] || say "warning: no LAN address found; add yours to server.listen in $CONFIG"
  elif cmp -s "$tmp" "$CONFIG"; then
    rm -f "$tmp" "$CONFIG.dpkg-dist"
    say "config: $CONFIG unchanged"
  else
    mv "$tmp" "$CONFIG.dpkg-dist"
    say "config: $CONFIG kept; the new default is beside it as $CONFIG.dpkg-dist (diff them)"
  fi
  if ! "$BIN_LINK" check-config "$CONFIG"; then
    die "$CONFIG has the problems above; fix them and run this again"
  fi
}

# --- 5. unit, port 53, start -----------------------------------------------------------------
install_unit() {
  install -m 0644 "$SRC/deploy/raspberrypi/$UNIT" "$UNIT_DIR/$UNIT"
  install -d -m 2770 -o "$SVC_USER" -g "$ADMIN_GROUP" "$STATE"
  if systemd_running; then
    systemctl daemon-reload
  fi
  systemctl enable "$UNIT" >/dev/null 2>&1 || systemctl enable "$UNIT"
  say "service: $UNIT installed and enabled"
}

# Our listen addresses, one "ADDR:PORT" a line, from the config the service will use.
our_listens() {
  "$PREFIX/venv/bin/python3" - "$CONFIG" <<'EOF'
import sys
from guardian_dns.config import load_config, parse_listen
for item in load_config(sys.argv[1]).server.listen:
    host, port = parse_listen(item)
    print(f"{host}:{port}")
EOF
}

# Who else listens on a port we need: "PROCESS ADDR:PORT" lines; our own running server is not
# a conflict (an upgrade restarts it).
find_conflicts() {
  local want line addr users host port w whost wport ours=0
  want=$(our_listens) || return 0
  command -v ss >/dev/null || return 0
  systemd_running && ours=$(systemctl show -p MainPID --value "$UNIT" 2>/dev/null || echo 0)
  { ss -H -lnup 2>/dev/null; ss -H -lntp 2>/dev/null; } | while read -r line; do
    addr=$(awk '{print $4}' <<<"$line")
    users=$(grep -o 'users:(("[^"]*"' <<<"$line" | sed 's/users:(("//; s/"$//' | head -n 1)
    port=${addr##*:}
    host=${addr%:*}
    host=${host#[}
    host=${host%]}
    host=${host%%%*}
    while read -r w; do
      wport=${w##*:}
      whost=${w%:*}
      [ "$port" = "$wport" ] || continue
      # Only the same address, or a wildcard on either side, collides.
      case "$host" in
        "$whost"|0.0.0.0|::|\*) ;;
        *) case "$whost" in 0.0.0.0|::) ;; *) continue ;; esac ;;
      esac
      [ "$ours" != 0 ] && grep -q "pid=$ours," <<<"$line" && continue
      printf '%s %s\n' "${users:-unknown}" "$addr"
    done <<<"$want"
  done | sort -u
}

fix_resolved() {
  install -d -m 0755 "$(dirname "$RESOLVED_DROPIN")"
  cat >"$RESOLVED_DROPIN" <<'EOF'
# Written by Guardian DNS's install.sh: Guardian DNS answers on port 53, so systemd-resolved's
# stub listener (127.0.0.53) is turned off; uninstall.sh removes this file.
[Resolve]
DNSStubListener=no
EOF
  # With the stub gone, /etc/resolv.conf must name real servers (what Pi-hole does too).
  if [ "$(readlink /etc/resolv.conf 2>/dev/null)" != /run/systemd/resolve/resolv.conf ]; then
    readlink /etc/resolv.conf >"$PREFIX/resolv.conf.link" 2>/dev/null || true
    ln -sfn /run/systemd/resolve/resolv.conf /etc/resolv.conf
  fi
  systemctl restart systemd-resolved
  say "port 53: systemd-resolved's stub listener turned off ($RESOLVED_DROPIN)"
}

fix_dnsmasq() {
  install -d -m 0755 "$(dirname "$DNSMASQ_DROPIN")"
  cat >"$DNSMASQ_DROPIN" <<'EOF'
# Written by Guardian DNS's install.sh: dnsmasq's DNS is off (port=0) so Guardian DNS can answer
# on port 53; its DHCP keeps working. uninstall.sh removes this file.
port=0
EOF
  systemctl restart dnsmasq
  say "port 53: dnsmasq's DNS turned off, its DHCP kept ($DNSMASQ_DROPIN)"
}

explain_conflicts() {
  local conflicts=$1 proc addr
  say "port 53 is taken:"
  while read -r proc addr; do
    case "$proc" in
      systemd-resolve*)
        say "  systemd-resolved's stub listener on $addr. Fix (what Pi-hole does): DNSStubListener=no"
        say "    in $RESOLVED_DROPIN, /etc/resolv.conf -> /run/systemd/resolve/resolv.conf" ;;
      dnsmasq*)
        say "  dnsmasq on $addr. Fix: port=0 in $DNSMASQ_DROPIN (its DHCP keeps working),"
        say "    or 'systemctl disable --now dnsmasq' if nothing needs it; if it is"
        say "    NetworkManager's own, set dns=default in /etc/NetworkManager/NetworkManager.conf" ;;
      *)
        say "  $proc on $addr: stop it, or set server.listen in $CONFIG to addresses it does not use" ;;
    esac
  done <<<"$conflicts"
}

resolve_port53() {
  local conflicts answer proc
  conflicts=$(find_conflicts)
  [ -n "$conflicts" ] || return 0
  explain_conflicts "$conflicts"
  if [ "$FIX_PORT53" = ask ]; then
    FIX_PORT53=no
    if [ -t 0 ]; then
      read -r -p "guardian-dns install: apply these fixes? [y/N] " answer
      case "$answer" in [yY]*) FIX_PORT53=yes ;; esac
    fi
  fi
  if [ "$FIX_PORT53" != yes ]; then
    say "not started: re-run with --fix-port53, or fix it by hand and 'systemctl start guardian-dns'"
    return 1
  fi
  systemd_running || { say "not started: systemd is not running here"; return 1; }
  while read -r proc; do
    case "$proc" in
      systemd-resolve*) fix_resolved ;;
      dnsmasq*) fix_dnsmasq ;;
    esac
  done < <(awk '{print $1}' <<<"$conflicts" | sort -u)
  conflicts=$(find_conflicts)
  if [ -n "$conflicts" ]; then
    explain_conflicts "$conflicts"
    say "not started: port 53 is still taken"
    return 1
  fi
}

start_service() {
  if [ "$START" != yes ]; then
    say "service: not started (--no-start)"
    return 0
  fi
  if ! systemd_running; then
    # A chroot or an image being prepared: nothing to start, but a conflict is still worth
    # knowing about before the first boot.
    local conflicts
    conflicts=$(find_conflicts)
    [ -z "$conflicts" ] || explain_conflicts "$conflicts"
    say "service: systemd is not running here (chroot?); it starts at the next boot"
    return 0
  fi
  resolve_port53 || exit 2
  # restart, not reload: an upgrade replaced the code.
  systemctl restart "$UNIT"
  if systemctl is-active --quiet "$UNIT"; then
    say "service: running ($(systemctl show -p MainPID --value "$UNIT"))"
  else
    systemctl --no-pager status "$UNIT" || true
    die "the service did not start; see journalctl -u guardian-dns"
  fi
}

install_bypass() {
  [ -n "$BYPASS" ] || return 0
  local names tmp
  names=$(tr ',' '\n' <<<"$BYPASS" | sed '/^$/d; s/.*/"&"/' | paste -sd, - | sed 's/,/, /g')
  tmp=$(mktemp "$ETC/.bypass.nft.XXXXXX")
  sed "s/@LAN_INTERFACES@/$names/" "$SRC/deploy/raspberrypi/bypass.nft" >"$tmp"
  chmod 0644 "$tmp"
  nft -c -f "$tmp" || { rm -f "$tmp"; die "the bypass rules do not load (see above)"; }
  mv "$tmp" "$ETC/bypass.nft"
  install -m 0644 "$SRC/deploy/raspberrypi/guardian-dns-bypass.service" \
    "$UNIT_DIR/guardian-dns-bypass.service"
  if systemd_running; then
    systemctl daemon-reload
    systemctl enable guardian-dns-bypass.service >/dev/null 2>&1
    systemctl restart guardian-dns-bypass.service
  else
    systemctl enable guardian-dns-bypass.service >/dev/null 2>&1
  fi
  say "bypass rules: $ETC/bypass.nft for $names (table inet guardian_dns_bypass)"
}

next_steps() {
  local first
  first=$(our_listens 2>/dev/null | grep -v '^127\.' | head -n 1)
  [ -n "$first" ] || first="YOUR-PI-ADDRESS:53 (add it to server.listen first)"
  cat <<EOF

Guardian DNS is installed. Next:
  1. Check it from this Pi:     dig @${first%:*} example.com          (an answer)
                                dig @${first%:*} use-application-dns.net  (NXDOMAIN: blocked)
  2. In your router's settings, set the DHCP "DNS server" to this Pi's address
     (${first%:*}); devices pick it up when they renew their lease (or reconnect).
  3. From a phone or laptop:    dig example.com   (the SERVER line shows the Pi)
  Service: guardian-dns status --config $CONFIG (root or $ADMIN_GROUP);
           systemctl status guardian-dns; logs: journalctl -u guardian-dns
  Config:  $CONFIG (check-config, then systemctl reload guardian-dns)
  Remove:  $PREFIX/app/deploy/raspberrypi/uninstall.sh
EOF
}

check_release
install_packages
check_python
create_users
install_code
install_config
install_unit
start_service
install_bypass
next_steps
