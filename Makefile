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
	@echo $(SYSTEM_PACKAGES) $(ADVERSARIAL_PACKAGES)

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

# --- installation on a gateway (issue #5) --------------------------------------
LIBDIR := $(PREFIX)/lib/icmp6-shim
UNITDIR ?= /etc/systemd/system
CONFDIR ?= /etc/icmp6-shim
DOCDIR := $(PREFIX)/share/doc/icmp6-shim

.PHONY: install uninstall

install: system-deps
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(PREFIX)/bin
	test -x $(DESTDIR)$(LIBDIR)/venv/bin/python || $(PYTHON) -m venv $(DESTDIR)$(LIBDIR)/venv
	$(DESTDIR)$(LIBDIR)/venv/bin/pip install -q --upgrade pip 'setuptools>=77' cffi
	$(DESTDIR)$(LIBDIR)/venv/bin/pip install -q .
	ln -sf $(LIBDIR)/venv/bin/icmp6-shim $(DESTDIR)$(PREFIX)/bin/icmp6-shim
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
