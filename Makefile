# icmp6-shim: two commands do everything, as root on a fresh Debian 12:
#   make test   - install what is missing, build, run the whole test suite
#   make demo   - the same set-up, then the main job on the default config
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FUZZ_SECONDS ?= 60
PREFIX ?= /usr/local
DESTDIR ?=

# Debian packages the build, the shim and its tests need (installed only if missing).
SYSTEM_PACKAGES := gcc libc6-dev pkg-config libnetfilter-queue-dev libnfnetlink-dev \
	libmnl-dev nftables iptables iproute2 iputils-ping tcpdump clang python3-venv python3-dev \
	systemd util-linux libclang-rt-14-dev
# ... and the adversarial suite (make test-adversarial): the THC-IPv6 attack tools (atk6-*).
ADVERSARIAL_PACKAGES := thc-ipv6
# ... and the real-IKE scenarios (testbed ike-*, tests/integration/test_ike.py): strongSwan's
# charon, swanctl and pki (the standard plugins bring openssl and gcm), and radvd. Part of
# `make test`: on a kernel with ESP (the stock-kernel lane) those tests run.
IKE_PACKAGES := strongswan-charon strongswan-swanctl strongswan-pki libstrongswan-standard-plugins radvd
SYSTEM_PACKAGES += $(IKE_PACKAGES)
ADVERSARIAL_JSON ?= adversarial-results.json

.PHONY: all system-deps print-packages venv test test-adversarial test-vm demo fuzz bench clean

all: venv

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES) $(EXTRA_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "error: missing Debian packages:$$missing (run as root, or install them)"; exit 1; fi; \
		echo "installing:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Every Debian package any target installs (vm/run.sh's warm development image uses it).
print-packages:
	@echo $(SYSTEM_PACKAGES) $(ADVERSARIAL_PACKAGES) $(DEB_BUILD_PACKAGES)

$(VENV)/.installed: pyproject.toml setup.py native/build_icmp6.py $(wildcard native/*.c native/*.h)
	$(MAKE) system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools>=77' cffi wheel 'cython>=3'
	$(PY) -m pip install -q --no-build-isolation -e '.[test]'
	touch $@

venv: $(VENV)/.installed

test: system-deps venv
	$(PY) -m pytest -v $(PYTEST_ARGS)

# THC-IPv6 tools and crafted evasions against the shim on a gateway: prints a table
# (attack, sent, judged, reached, expected, ok), writes $(ADVERSARIAL_JSON), exits 1
# unless every row is ok. About a minute; docs/testbed.md "Adversarial suite".
test-adversarial: venv
	$(MAKE) system-deps EXTRA_PACKAGES="$(ADVERSARIAL_PACKAGES)"
	$(VENV)/bin/icmp6-shim testbed attack --json $(ADVERSARIAL_JSON)

# The same `CI=true make test`, of the committed HEAD, in a fresh Debian 12 guest with the
# stock kernel (nft queue, ESP) and systemd as PID 1; see docs/testbed.md.
test-vm:
	bash vm/run.sh

demo: system-deps venv
	$(VENV)/bin/icmp6-shim demo

fuzz: system-deps venv
	bash native/fuzz/run.sh $(FUZZ_SECONDS)

bench: venv
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf build dist *.egg-info shim/_icmp6*.so shim/_icmp6.c shim/_icmp6.o $(VENV) .pytest_cache .hypothesis

# --- installation on a gateway ---------------------------------------------------
# The package and its dependencies go into $(LIBDIR)/lib, built for and run by the system
# interpreter (not the first python3 in PATH: a pyenv under /root cannot start under the
# unit's ProtectHome=yes). $(LIBDIR)/bin/icmp6-shim is a launcher that finds ../lib from its
# own real path, so nothing installed names DESTDIR: a staged tree is relocatable (the .deb
# below is one). The build venv is a tool in build/, never installed.
SYSTEM_PYTHON ?= /usr/bin/python3
LIBDIR := $(PREFIX)/lib/icmp6-shim
UNITDIR ?= /etc/systemd/system
CONFDIR ?= /etc/icmp6-shim
DOCDIR := $(PREFIX)/share/doc/icmp6-shim
INSTALL_BUILD := build/install

.PHONY: install uninstall deb

install: system-deps
	@test -x $(SYSTEM_PYTHON) || { echo "error: no interpreter $(SYSTEM_PYTHON) (set SYSTEM_PYTHON=)"; exit 1; }
	install -d $(DESTDIR)$(LIBDIR)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(PREFIX)/bin
	rm -rf $(INSTALL_BUILD) $(DESTDIR)$(LIBDIR)/lib.new
	$(SYSTEM_PYTHON) -m venv $(INSTALL_BUILD)/venv
	$(INSTALL_BUILD)/venv/bin/pip install -q --upgrade pip 'setuptools>=77' cffi
	$(INSTALL_BUILD)/venv/bin/pip install -q --no-compile --target $(DESTDIR)$(LIBDIR)/lib.new .
	# pip's console scripts there name the build venv's python: the launcher replaces them.
	rm -rf $(DESTDIR)$(LIBDIR)/lib.new/bin
	# Swap in the new tree in two renames (a running daemon imports some modules late).
	rm -rf $(DESTDIR)$(LIBDIR)/lib.old $(DESTDIR)$(LIBDIR)/venv
	if [ -d $(DESTDIR)$(LIBDIR)/lib ]; then mv $(DESTDIR)$(LIBDIR)/lib $(DESTDIR)$(LIBDIR)/lib.old; fi
	mv $(DESTDIR)$(LIBDIR)/lib.new $(DESTDIR)$(LIBDIR)/lib
	rm -rf $(DESTDIR)$(LIBDIR)/lib.old
	# Byte-code named by the final path (-d), so tracebacks never name the staging tree;
	# the unit's read-only file system means the daemon could never write it itself.
	$(SYSTEM_PYTHON) -m compileall -q -d $(LIBDIR)/lib $(DESTDIR)$(LIBDIR)/lib
	sed -e 's#@PYTHON@#$(SYSTEM_PYTHON)#' packaging/launcher.in > $(DESTDIR)$(LIBDIR)/bin/icmp6-shim
	chmod 755 $(DESTDIR)$(LIBDIR)/bin/icmp6-shim
	ln -sfn $(LIBDIR)/bin/icmp6-shim $(DESTDIR)$(PREFIX)/bin/icmp6-shim
	sed -e 's#/usr/local#$(PREFIX)#g' -e 's#/etc/icmp6-shim#$(CONFDIR)#g' systemd/icmp6-shim.service \
		> $(DESTDIR)$(UNITDIR)/icmp6-shim.service
	chmod 644 $(DESTDIR)$(UNITDIR)/icmp6-shim.service
	install -d -m 755 $(DESTDIR)$(CONFDIR) $(DESTDIR)$(CONFDIR)/rules.d
	# Never overwrite an operator's config.
	test -e $(DESTDIR)$(CONFDIR)/icmp6-shim.toml || install -m 644 config/icmp6-shim.toml $(DESTDIR)$(CONFDIR)/icmp6-shim.toml
	install -m 644 README.md $(DESTDIR)$(DOCDIR)/README.md
	cp -r docs $(DESTDIR)$(DOCDIR)/
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "installed; enable with: systemctl enable --now icmp6-shim"

uninstall:
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then \
		systemctl disable --now icmp6-shim 2>/dev/null || true; fi
	rm -f $(DESTDIR)$(UNITDIR)/icmp6-shim.service $(DESTDIR)$(PREFIX)/bin/icmp6-shim
	rm -rf $(DESTDIR)$(LIBDIR) $(DESTDIR)$(DOCDIR)
	# The config goes only if it is still the shipped one and nothing was added.
	if cmp -s config/icmp6-shim.toml $(DESTDIR)$(CONFDIR)/icmp6-shim.toml; then \
		rm -f $(DESTDIR)$(CONFDIR)/icmp6-shim.toml; rmdir $(DESTDIR)$(CONFDIR)/rules.d $(DESTDIR)$(CONFDIR) 2>/dev/null || true; \
	else echo "kept $(DESTDIR)$(CONFDIR) (changed or holds rules)"; fi

# --- a Debian package of this tree -------------------------------------------------------
# `make deb` -> dist/icmp6-shim_<version>_<arch>.deb: `make install` staged with Debian's
# paths, plus packaging/deb/ (control, conffiles, the maintainer scripts dh_installsystemd
# would write). Install with `apt install ./dist/icmp6-shim_*.deb`; docs/testbed.md shows the
# lane installing, running and purging it under systemd.
DEB_BUILD_PACKAGES := dpkg-dev
DEB_OUT ?= dist
DEB_STAGE := build/deb

deb:
	$(MAKE) system-deps EXTRA_PACKAGES="$(DEB_BUILD_PACKAGES)"
	rm -rf $(DEB_STAGE)
	$(MAKE) install DESTDIR=$(CURDIR)/$(DEB_STAGE)/debian/icmp6-shim PREFIX=/usr UNITDIR=/lib/systemd/system \
		CONFDIR=/etc/icmp6-shim SYSTEM_PYTHON=/usr/bin/python3
	bash packaging/deb/build.sh $(DEB_STAGE) $(DEB_OUT)
