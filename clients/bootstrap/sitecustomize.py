"""socksify's bootstrap: route this Python program's sockets by socks.conf, then run the
sitecustomize this one hides (Debian ships one).

Fail closed: when the SOCKS socket cannot be installed, the program does not run at all,
because running it unsocksified would send its connections around the firewall's policy.
"""

import importlib.machinery
import importlib.util
import os
import sys


def _install() -> None:
    try:
        from clients import socksify
        socksify.install()
    except Exception as e:  # noqa: BLE001 (any failure stops the program: see above)
        print(f"socksify: cannot route this program through SOCKS: {e}", file=sys.stderr)
        os._exit(1)


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_install()
_chain()
