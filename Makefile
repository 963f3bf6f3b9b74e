# sockd: the front door is `make run` and `make test` (see README.md).

PYTHON    ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
SBINDIR   ?= $(BINDIR)# the server's programs (sockd, test_sockd_conf, sockpasswd)
LIBDIR    ?= $(PREFIX)/lib
DATADIR   ?= $(PREFIX)/share
MANDIR    ?= $(DATADIR)/man
SOCKD_USER ?= nobody# the workers' user in the generated start-up files
VENVDIR   := $(LIBDIR)/sockd
INITDIR   := $(DATADIR)/sockd/init
INITOUT   ?= build/init# where `make initfiles' generates the start-up files
# Wheels of sockd's dependencies, for installing without the network (`make wheels',
# done by `make test' before the tests, which run where only loopback exists).
WHEELS    := $(CURDIR)/build/wheels
PIP_OPTS  ?=
VERSION   := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' sockd/__init__.py)

# Run the tests and the benchmark where only loopback exists: no mistake of a
# test (or of the proxy) can send a packet off this machine.
NETNS     := unshare --net sh -c 'ip link set lo up && exec "$$0" "$$@"'

.PHONY: all run test unit lint bench profile fuzz soak deps venv wheels install install.server \
        install.clients install.man install.venv initfiles uninstall uninstall.server \
        uninstall.man deb clean

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
	$(MAKE) -s wheels
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

## profile: one worker under cProfile, the benchmark's sequential load: calls per session
profile: venv
	scripts/install-deps bench
	$(NETNS) $(PY) scripts/profile_session.py

## fuzz: every parser under a coverage-guided fuzzer (atheris), FUZZ_SECONDS each
FUZZ_SECONDS ?= 60
fuzz: venv
	$(PY) -m pip install -q atheris
	$(PY) scripts/fuzz.py --seconds $(FUZZ_SECONDS)

## soak: the reliability tests at full length (10,000 verified transfers, 30 s of HUPs...)
soak: venv
	scripts/install-deps test
	$(NETNS) $(PY) scripts/soak.py

## wheels: sockd's dependencies as wheels in build/wheels (the network, once)
wheels: venv
	$(PY) -m pip wheel -q -w $(WHEELS) . setuptools wheel

## install: the server and the clients into PREFIX (DESTDIR= to stage, for packaging)
install: install.server install.clients

# The programs live in their own virtual environment in $(VENVDIR) (Debian's Python is
# externally managed); $(SBINDIR) and $(BINDIR) get links to them.  With DESTDIR the
# environment is built in the staging tree and then made to work at its final path:
# the entry scripts' #! lines and the activate scripts name $(VENVDIR), and the compiled
# files name the sources there (scripts/relocate-venv).
install.venv:
	scripts/install-deps runtime
	$(PYTHON) -m venv $(DESTDIR)$(VENVDIR)
	$(DESTDIR)$(VENVDIR)/bin/python -m pip install -q --no-compile $(PIP_OPTS) .
	scripts/relocate-venv "$(DESTDIR)" "$(VENVDIR)"

install.server: install.venv install.man initfiles
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(INITDIR)/pam.d
	ln -sf $(VENVDIR)/bin/sockd $(DESTDIR)$(SBINDIR)/sockd
	ln -sf $(VENVDIR)/bin/test_sockd_conf $(DESTDIR)$(SBINDIR)/test_sockd_conf
	ln -sf $(VENVDIR)/bin/sockpasswd $(DESTDIR)$(SBINDIR)/sockpasswd
	install -m 644 $(INITOUT)/* init/sockd.socket init/services init/sockd.conf \
	    $(DESTDIR)$(INITDIR)/
	chmod 755 $(DESTDIR)$(INITDIR)/sockd.rc
	install -m 644 init/pam.d/sockd $(DESTDIR)$(INITDIR)/pam.d/
	@echo "sockd installed in $(SBINDIR); start-up files, a sample sockd.conf and a PAM" \
	      "sample in $(INITDIR)"

# The start-up files for this PREFIX (and SOCKD_USER), from init/*.in into $(INITOUT).
initfiles:
	install -d $(INITOUT)
	for f in init/*.in; do \
	    sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SOCKD_USER@|$(SOCKD_USER)|g' "$$f" \
	        > "$(INITOUT)/$$(basename "$$f" .in)" || exit 1; \
	done

# The client programs, their pages, and a commented sample socks.conf (never /etc: the
# administrator copies it).
install.clients: install.venv install.man
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/sockd
	for p in socksify test_socks_conf rfinger rwhois rtelnet rftp; do \
	    ln -sf $(VENVDIR)/bin/$$p $(DESTDIR)$(BINDIR)/$$p || exit 1; \
	done
	install -m 644 init/socks.conf $(DESTDIR)$(DATADIR)/sockd/socks.conf.sample
	@echo "socksify, test_socks_conf, rfinger, rwhois, rtelnet and rftp installed in" \
	      "$(BINDIR); sample: $(DATADIR)/sockd/socks.conf.sample"

# Every page of the distribution, each in the directory of its section.
install.man:
	for page in man/*.[1-8]; do \
	    dir=$(DESTDIR)$(MANDIR)/man$${page##*.}; \
	    install -d "$$dir" && install -m 644 "$$page" "$$dir/" || exit 1; \
	done

## uninstall: remove what `make install' put in PREFIX (files in /etc are left alone)
uninstall: uninstall.server uninstall.man

# Every link into the environment (the clients' too), then the environment itself.
uninstall.server:
	for dir in $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR); do \
	    [ -d "$$dir" ] && find "$$dir" -maxdepth 1 -type l -lname '$(VENVDIR)/bin/*' -delete; \
	done; true
	rm -rf $(DESTDIR)$(VENVDIR) $(DESTDIR)$(DATADIR)/sockd

uninstall.man:
	for page in man/*.[1-8]; do \
	    rm -f "$(DESTDIR)$(MANDIR)/man$${page##*.}/$${page##*/}"; \
	done

## deb: a Debian package of the server and the clients, in build/ (scripts/mkdeb)
deb:
	rm -rf build/deb
	$(MAKE) install DESTDIR=$(CURDIR)/build/deb/root PREFIX=/usr SBINDIR=/usr/sbin \
	    SOCKD_USER=sockd
	scripts/mkdeb build/deb/root $(VERSION) build

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
