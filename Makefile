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
	libmnl-dev nftables iptables iproute2 iputils-ping tcpdump clang python3-venv python3-dev

.PHONY: all system-deps venv test demo fuzz bench clean cleanup-host

all: venv

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "error: missing Debian packages:$$missing (run as root, or install them)"; exit 1; fi; \
		echo "installing:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml setup.py native/build_icmp6.py $(wildcard native/*.c native/*.h)
	$(MAKE) system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools>=70.1' cffi wheel
	$(PY) -m pip install -q --no-build-isolation -e '.[test]'
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -v $(PYTEST_ARGS)

demo: venv
	$(VENV)/bin/icmp6-shim demo

fuzz: venv
	bash native/fuzz/run.sh $(FUZZ_SECONDS)

bench: venv
	$(PY) -m bench

clean:
	rm -rf build dist *.egg-info shim/_icmp6*.so shim/_icmp6.c shim/_icmp6.o $(VENV) .pytest_cache .hypothesis
