# sockd: the front door is `make run` and `make test` (see README.md).

PYTHON    ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python
PREFIX    ?= /usr/local
SBINDIR   ?= $(PREFIX)/sbin
BINDIR    ?= $(PREFIX)/bin
MANDIR    ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc

# Run the tests and the benchmark where only loopback exists: no mistake of a
# test (or of the proxy) can send a packet off this machine.
NETNS     := unshare --net sh -c 'ip link set lo up && exec "$$0" "$$@"'

.PHONY: all run test unit lint bench deps venv install install.server install.clients \
        install.man clean

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

install: install.server install.clients install.man

install.server:
	$(PYTHON) -m pip install --no-deps --prefix $(PREFIX) .
	install -d $(DESTDIR)$(SYSCONFDIR)
	install -m 644 init/sockd.service init/sockd.socket $(DESTDIR)/lib/systemd/system/ 2>/dev/null || true

install.clients:
	$(PYTHON) -m pip install --no-deps --prefix $(PREFIX) .

install.man:
	install -d $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 444 man/*.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 444 man/*.8 $(DESTDIR)$(MANDIR)/man8/

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
