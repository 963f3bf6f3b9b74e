"""The process title as a live status display (the original's FOR_PS).

Owns nothing but the title: callers say what the process is doing, on each
state change and never in a loop.  Without setproctitle it does nothing.
"""

try:
    from setproctitle import setproctitle as _set
except ImportError:  # pragma: no cover - setproctitle is a hard dependency
    _set = None


def set_title(title: str) -> None:
    """Show *title* in ps(1); it is already escaped by the caller."""
    if _set is not None:
        _set(title)
