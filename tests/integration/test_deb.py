"""`make deb`: the package installs, starts, serves a curl and purges to nothing, in a
throwaway root: an overlay of this machine's / (changes kept on a tmpfs) in a private mount
namespace, entered with chroot.  The host is never changed.  Slow: it builds the package."""

import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, free_port, require

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

WHEELS = ROOT / "build" / "wheels"

# Runs in the private mount namespace: the overlay, then the steps in the chroot.
OUTSIDE = r"""
set -eu
top=$1 deb=$2
mount -t tmpfs sockd-deb-test "$top"
mkdir "$top/upper" "$top/work" "$top/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$top/upper,workdir=$top/work" "$top/root"
mount -t proc proc "$top/root/proc"
mount --rbind /dev "$top/root/dev"
cp "$deb" "$top/root/tmp/sockd.deb"
cp "$3" "$top/root/tmp/steps.sh"
status=0
chroot "$top/root" /bin/sh /tmp/steps.sh "$4" "$5" || status=$?
echo "LEFT:"
cd "$top/upper" && find . -path '*sockd*' ! -path './tmp/*' ! -type c | sort  # c: removed from /
exit $status
"""

# Runs in the chroot: install, start with the rc script, serve, status, purge.
STEPS = r"""
set -eu
port=$1 web=$2
export DEBIAN_FRONTEND=noninteractive
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
dpkg -i /tmp/sockd.deb >/tmp/dpkg.out 2>&1 || { cat /tmp/dpkg.out; exit 1; }
rm /usr/sbin/policy-rc.d
echo "USER: $(getent passwd sockd | cut -d: -f1,7)"
echo "CONFFILES: $(dpkg-query -W -f='${Conffiles}' sockd | awk 'NF {print $1}' | tr '\n' ' ')"
ls /etc/systemd/system/multi-user.target.wants/sockd.service 2>/dev/null && echo ENABLED
/usr/sbin/sockd -t
dpkg -L sockd | while read -r f; do [ -d "$f" ] || echo "$f"; done | sort > /tmp/files
sed -i "s|^SOCKD_OPTS=.*|SOCKD_OPTS=\"--listen 127.0.0.1:$port --log /tmp/sockd.log\"|" \
    /etc/default/sockd
/etc/init.d/sockd start
pid=$(cat /var/run/sockd.pid)
echo "COMM: $(cat /proc/$pid/comm)"
curl -sS --max-time 20 --socks5 127.0.0.1:$port http://127.0.0.1:$web/hello.txt
echo "WORKERS: $(ps -o user= --ppid $pid | sort -u | tr '\n' ' ')"
/usr/sbin/sockd --status | head -2
dpkg --purge sockd >/tmp/dpkg.out 2>&1 || { cat /tmp/dpkg.out; exit 1; }
kill -0 "$pid" 2>/dev/null && echo "STILL RUNNING"
while read -r f; do [ -e "$f" ] || [ -L "$f" ] && echo "KEPT: $f"; done < /tmp/files
for f in /etc/sockd.conf /etc/default/sockd /etc/init.d/sockd /usr/lib/sockd /run/sockd; do
    [ -e "$f" ] && echo "KEPT: $f"
done
echo "PURGED"
"""


@pytest.fixture(scope="module")
def deb() -> Path:
    assert any(WHEELS.glob("python_daemon-*.whl")), \
        "no wheels in build/wheels: run `make wheels` (make test does) where there is a network"
    done = subprocess.run([require("make"), "-s", "-C", str(ROOT), "deb",
                           f"PIP_OPTS=--no-index --find-links {WHEELS}"],
                          capture_output=True, text=True, timeout=500, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    return ROOT / done.stdout.strip().splitlines()[-1]    # mkdeb prints the package's path


def test_the_package_installs_serves_and_purges(deb, tmp_path, http_server):
    top = tmp_path / "top"
    top.mkdir()
    steps = tmp_path / "steps.sh"
    steps.write_text(STEPS)
    port = free_port()
    done = subprocess.run([require("unshare"), "--mount", "--propagation", "private", "sh", "-c",
                           OUTSIDE, "sh", str(top), str(deb), str(steps), str(port),
                           str(http_server)], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "USER: sockd:/usr/sbin/nologin" in out
    assert "CONFFILES: /etc/sockd.conf /etc/default/sockd /etc/init.d/sockd" in out
    assert "ENABLED" not in out
    assert "sockd: configuration OK" in out
    assert "COMM: sockd" in out
    assert "hello through socks\n" in out
    assert "WORKERS: sockd" in out
    assert "workers:" in out
    assert "STILL RUNNING" not in out and "KEPT:" not in out, out
    assert "PURGED" in out
    # nothing named sockd is left among the files the test changed (the user's lines in
    # /etc/passwd are in files of other names)
    left = out.split("LEFT:\n", 1)[1].split()
    assert left == [], left
