#!/usr/bin/env bash
# `make deb`, after `make install DESTDIR=STAGE/debian/icmp6-shim PREFIX=/usr ...`:
# add the Debian metadata to the staged tree and build the package with dpkg-deb.
#
#   packaging/deb/build.sh STAGE OUTDIR   -> OUTDIR/icmp6-shim_<version>_<arch>.deb
#
# Depends: the system interpreter's minor version (the compiled modules are built for its
# ABI, as dh_python3 pins them), the shared libraries dpkg-shlibdeps finds the ELF files
# need (libnetfilter-queue1 for netfilterqueue, libc6), and a diversion tool. No debhelper:
# the maintainer scripts are the ones dh_installsystemd would generate, kept as files here.
# Environment: DEB_VERSION (default: pyproject's version), DEB_MAINTAINER.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
stage=${1:?usage: build.sh STAGE OUTDIR}
out=${2:?usage: build.sh STAGE OUTDIR}
root="$stage/debian/icmp6-shim"
[ -x "$root/usr/lib/icmp6-shim/bin/icmp6-shim" ] || { echo "error: $root holds no staged install" >&2; exit 1; }

version=${DEB_VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/pyproject.toml")}
maintainer=${DEB_MAINTAINER:-icmp6-shim developers <icmp6-shim@localhost>}
arch=$(dpkg --print-architecture)
pyver=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pynext=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')

# dpkg-shlibdeps reads debian/control from the working directory and wants the binaries
# under debian/<package>/: the stage is laid out so.
printf 'Source: icmp6-shim\n\nPackage: icmp6-shim\nArchitecture: any\n' > "$stage/debian/control"
mapfile -t elves < <(find "$root" -type f -name '*.so*')
shlibs=$(cd "$stage" && dpkg-shlibdeps --warnings=0 --ignore-missing-info -O "${elves[@]#"$stage"/}" \
	| sed -n 's/^shlibs:Depends=//p')
depends="python3 (>= $pyver~), python3 (<< $pynext), $shlibs, nftables | iptables"

doc="$root/usr/share/doc/icmp6-shim"
install -m 644 "$here/copyright" "$doc/copyright"
printf 'icmp6-shim (%s) unstable; urgency=medium\n\n  * Built from commit %s by make deb.\n\n -- %s  %s\n' \
	"$version" "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
	"$maintainer" "$(date -R)" | gzip -9n > "$doc/changelog.Debian.gz"

mkdir -p "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s#@VERSION@#$version#" -e "s#@ARCH@#$arch#" -e "s#@MAINTAINER@#$maintainer#" \
	-e "s#@SIZE@#$size#" -e "s#@DEPENDS@#$depends#" "$here/control.in" > "$root/DEBIAN/control"
# Every file under /etc is the operator's: dpkg keeps their changes on upgrade, purge removes.
(cd "$root" && find etc -type f | sort | sed 's|^|/|') > "$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do install -m 755 "$here/$s" "$root/DEBIAN/$s"; done
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print0 | sort -z | xargs -0 md5sum \
	| sed 's| \./| |') > "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb="$out/icmp6-shim_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "built $deb: Depends: $depends"
