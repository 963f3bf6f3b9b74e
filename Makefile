# sockd: the front door is `make run` and `make test` (see README.md).

PYTHON    ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
LIBDIR    ?= $(PREFIX)/lib
DATADIR   ?= $(PREFIX)/share
MANDIR    ?= $(DATADIR)/man

# Run the tests and the benchmark where only loopback exists: no mistake of a
# test (or of the proxy) can send a packet off this machine.
NETNS     := unshare --net sh -c 'ip link set lo up && exec "$$0" "$$@"'

.PHONY: all run test unit lint bench fuzz soak deps venv install install.server \
        install.clients install.man clean

all: venv

$(VENV)/.installed: setup.py
	scripts/install-deps runtime
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

## run: sockd in the foreground on its embedded default (loopback clients only), port 1080
run: venv
	$(VENV)/bin/sockd --foreground --log stderr

## test: install what the tests need (real clients and servers included), run every test
test: venv
	scripts/install-deps test
	$(PY) -m ruff check sockd clients scripts tests
	$(NETNS) $(PY) -m pytest -q -p no:cacheprovider tests

unit: venv
	$(PY) -m pytest -q tests/unit

lint: venv
	$(PY) -m ruff check sockd clients scripts tests

## bench: direct, sockd and Dante under the same load, in one run
bench: venv
	scripts/install-deps bench
	$(NETNS) $(PY) scripts/bench.py
	$(PY) scripts/bench_rules.py

## fuzz: every parser under a coverage-guided fuzzer (atheris), FUZZ_SECONDS each
FUZZ_SECONDS ?= 60
fuzz: venv
	$(PY) -m pip install -q atheris
	$(PY) scripts/fuzz.py --seconds $(FUZZ_SECONDS)

## soak: the reliability tests at full length (10,000 verified transfers, 30 s of HUPs...)
soak: venv
	scripts/install-deps test
	$(NETNS) $(PY) scripts/soak.py

install: install.server install.clients

# The programs live in their own virtual environment under $(LIBDIR)/sockd (Debian's
# Python is externally managed); $(BINDIR) gets links to them.
$(DESTDIR)$(LIBDIR)/sockd/bin/python:
	scripts/install-deps runtime
	$(PYTHON) -m venv $(DESTDIR)$(LIBDIR)/sockd

install.server: $(DESTDIR)$(LIBDIR)/sockd/bin/python install.man
	$(DESTDIR)$(LIBDIR)/sockd/bin/python -m pip install -q .
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/sockd/init/pam.d
	ln -sf $(LIBDIR)/sockd/bin/sockd $(DESTDIR)$(BINDIR)/sockd
	ln -sf $(LIBDIR)/sockd/bin/test_sockd_conf $(DESTDIR)$(BINDIR)/test_sockd_conf
	ln -sf $(LIBDIR)/sockd/bin/sockpasswd $(DESTDIR)$(BINDIR)/sockpasswd
	install -m 644 $(filter-out init/pam.d init/socks.conf,$(wildcard init/*)) \
		$(DESTDIR)$(DATADIR)/sockd/init/
	install -m 644 init/pam.d/sockd $(DESTDIR)$(DATADIR)/sockd/init/pam.d/
	@echo "sockd installed in $(BINDIR); start-up files and a PAM sample in $(DATADIR)/sockd/init"

# The client programs, their pages, and a commented sample socks.conf (never /etc: the
# administrator copies it).
install.clients: $(DESTDIR)$(LIBDIR)/sockd/bin/python install.man
	$(DESTDIR)$(LIBDIR)/sockd/bin/python -m pip install -q .
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/sockd
	ln -sf $(LIBDIR)/sockd/bin/socksify $(DESTDIR)$(BINDIR)/socksify
	ln -sf $(LIBDIR)/sockd/bin/test_socks_conf $(DESTDIR)$(BINDIR)/test_socks_conf
	for p in rfinger rwhois rtelnet rftp; do \
	  ln -sf $(LIBDIR)/sockd/bin/$$p $(DESTDIR)$(BINDIR)/$$p; done
	install -m 644 init/socks.conf $(DESTDIR)$(DATADIR)/sockd/socks.conf.sample
	@echo "socksify, test_socks_conf, rfinger, rwhois, rtelnet and rftp installed in $(BINDIR);" \
	  "sample: $(DATADIR)/sockd/socks.conf.sample"

install.man:
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 444 man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 444 man/*.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 444 man/*.8 $(DESTDIR)$(MANDIR)/man8/

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
