#!/bin/sh
# Install or upgrade Guardian DNS on an OpenWrt router (23.05 or later), beside dnsmasq, as root:
#
#     sh deploy/openwrt/install.sh        (from a copy of this checkout on the router, e.g. /tmp)
#
# Python and its libraries come from opkg where OpenWrt packages them, the rest (dnslib,
# prometheus-client) from pip into a venv under /opt/guardian-dns. Needs about 60 MB of free
# overlay space (Python itself is most of it) and 256 MB of RAM or more (README.md, "Memory").
# The config (/etc/guardian-dns/guardian.yaml, /etc/config/guardian-dns) is never overwritten; a
# newer default goes beside it with "-opkg" appended, as opkg does. Then it enables and starts
# /etc/init.d/guardian-dns, which points dnsmasq at Guardian DNS.
set -eu

PREFIX=/opt/guardian-dns
ETC=/etc/guardian-dns
SRC=$(cd "$(dirname "$0")/../.." && pwd)
OPKG_PACKAGES="python3 python3-venv python3-pip python3-yaml python3-requests python3-cryptography ca-bundle"
PIP_PACKAGES="dnslib prometheus-client"

say() { printf '%s\n' "guardian-dns install: $*"; }
die() { printf '%s\n' "guardian-dns install: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root"
[ -f "$SRC/guardian_dns/__init__.py" ] || die "$SRC is not a Guardian DNS checkout"
[ -f /etc/openwrt_release ] || die "this is for OpenWrt; on Raspberry Pi OS use deploy/raspberrypi/install.sh"

# shellcheck disable=SC2086 # word splitting of the package lists is wanted
install_packages() {
	missing=""
	for p in $OPKG_PACKAGES; do
		opkg status "$p" 2>/dev/null | grep -q "^Status:.* installed" || missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		say "opkg:$missing"
		opkg update
		opkg install $missing
	fi
}

install_code() {
	mkdir -p "$PREFIX"
	rm -rf "$PREFIX/app.new"
	mkdir -p "$PREFIX/app.new"
	for item in guardian_dns blocklists config deploy docs README.md; do
		[ -e "$SRC/$item" ] && cp -a "$SRC/$item" "$PREFIX/app.new/"
	done
	find "$PREFIX/app.new" -name __pycache__ -prune -exec rm -rf {} +
	rm -rf "$PREFIX/app.old"
	[ -d "$PREFIX/app" ] && mv "$PREFIX/app" "$PREFIX/app.old"
	mv "$PREFIX/app.new" "$PREFIX/app"
	rm -rf "$PREFIX/app.old"
	if [ ! -x "$PREFIX/venv/bin/python3" ]; then
		python3 -m venv --system-site-packages "$PREFIX/venv"
	fi
	site=$("$PREFIX/venv/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
	echo "$PREFIX/app" >"$site/guardian_dns.pth"
	for p in $PIP_PACKAGES; do
		module=$(echo "$p" | tr - _)
		"$PREFIX/venv/bin/python3" -c "import $module" 2>/dev/null ||
			"$PREFIX/venv/bin/python3" -m pip install -q "$p"
	done
	cat >/usr/bin/guardian-dns <<WRAPPER
#!/bin/sh
exec $PREFIX/venv/bin/python3 -m guardian_dns "\$@"
WRAPPER
	chmod 0755 /usr/bin/guardian-dns
	"$PREFIX/venv/bin/python3" -m compileall -q "$PREFIX/app/guardian_dns" >/dev/null
}

# $1: the shipped file, $2: where it goes. Never overwrites a file the admin may have edited.
install_config_file() {
	if [ ! -e "$2" ]; then
		cp "$1" "$2"
		say "$2 written"
	elif cmp -s "$1" "$2"; then
		rm -f "$2-opkg"
	else
		cp "$1" "$2-opkg"
		say "$2 kept; the new default is beside it as $2-opkg"
	fi
}

create_user() {
	# shellcheck disable=SC1091
	. /lib/functions.sh
	if ! user_exists guardian-dns; then
		group_exists guardian-dns || group_add guardian-dns 5353
		user_add guardian-dns 5353 5353 "Guardian DNS" /var/run/guardian-dns /bin/false
	fi
}

install_packages
install_code
create_user
mkdir -p "$ETC"
install_config_file "$SRC/deploy/openwrt/guardian.yaml" "$ETC/guardian.yaml"
install_config_file "$SRC/deploy/openwrt/guardian-dns.uci" /etc/config/guardian-dns
install -m 0755 "$SRC/deploy/openwrt/guardian-dns.init" /etc/init.d/guardian-dns 2>/dev/null ||
	{ cp "$SRC/deploy/openwrt/guardian-dns.init" /etc/init.d/guardian-dns && chmod 0755 /etc/init.d/guardian-dns; }
/usr/bin/guardian-dns check-config "$ETC/guardian.yaml" || die "fix $ETC/guardian.yaml and run this again"
/etc/init.d/guardian-dns enable
/etc/init.d/guardian-dns restart
say "running. Check from a LAN device: nslookup use-application-dns.net (NXDOMAIN: blocked)"
say "stop and give dnsmasq back its own servers: /etc/init.d/guardian-dns stop; disable to keep it off"
