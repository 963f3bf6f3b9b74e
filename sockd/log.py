"""Where sockd's log lines go, and how client-supplied text is made safe for them.

Owns the `sockd` logger's handlers (syslog, stderr or a file) and the one
escaping function that every client-controlled string passes through before it
reaches a log line or a process title (`escape`), and its sibling for messages
that quote a configuration file (`escape_text`, which keeps spaces readable).
The line formats themselves belong to the session and the master, and are
documented in sockd(8).
"""

import errno
import logging
import logging.handlers
import os
import socket
import sys
import threading
import time

log = logging.getLogger("sockd")

FACILITIES = logging.handlers.SysLogHandler.facility_names

_SAFE = frozenset(map(chr, range(0x21, 0x7F))) - {"\\"}
_ESCAPES = {c: c for c in _SAFE}


def escape(text: str, limit: int = 255) -> str:
    """Return *text* with every byte that is not printable ASCII written as \\xNN.

    No newline, control byte or non-ASCII character from a client ever reaches
    a log line or ps(1); a space becomes \\x20 so fields stay one word.
    """
    if len(text) > limit:
        text = text[:limit]
    if text.isascii() and text.isprintable() and " " not in text and "\\" not in text:
        return text     # the common case, said in C: every character is in _SAFE
    return "".join(_ESCAPES.get(c) or f"\\x{ord(c) & 0xFF:02x}" for c in text)


_READABLE = frozenset(range(0x20, 0x7F)) - {0x5C}


def escape_text(text: str, encoding: str = "utf-8") -> str:
    """Return *text*, a message quoting a file, readable on one log line.

    Printable ASCII and the space stay as they are (so `FILE:LINE: message`
    reads as prose); every other byte, the backslash included, is written as
    \\xNN: the bytes of the text in *encoding*, the file's own encoding, where
    bytes that did not decode (held as surrogate escapes) come back as
    themselves.  So a control byte or invalid UTF-8 in a configuration file
    neither reaches the terminal nor makes a syslog line vanish.
    """
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape_character(c, encoding) for c in text)


def _escape_character(c: str, encoding: str) -> str:
    if " " <= c <= "~" and c != "\\":
        return c
    try:
        data = c.encode(encoding, "surrogateescape")
    except UnicodeEncodeError:      # a lone surrogate that no file byte made
        data = c.encode("utf-8", "surrogatepass")
    return "".join(chr(b) if b in _READABLE else f"\\x{b:02x}" for b in data)


class _Formatter(logging.Formatter):
    """The file and stderr format, with the time stamp formatted once a second."""

    _second = -1
    _stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return self._stamp


def _lighten_records() -> None:
    """Skip the record fields sockd never prints (caller, thread, process name).

    These are the logging module's documented switches (Logging HOWTO,
    "Optimization"); two session lines per client make them worth it.
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False


class _SyslogHandler(logging.handlers.SysLogHandler):
    """A syslog handler that never lets a dead log socket stop the server.

    A message that UTF-8 cannot encode (a lone surrogate) would make the
    handler drop the whole line: such characters are written as escapes.
    """

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if text.isascii():
            return text
        return text.encode("utf-8", "backslashreplace").decode("utf-8")

    def handleError(self, record: logging.LogRecord) -> None:
        try:
            self.socket.close()
            self._connect_unixsocket(self.address)
        except OSError:
            pass


def open_no_follow(path: str, flags: int, mode: int = 0o644) -> int:
    """os.open(*path*) with O_NOFOLLOW and O_CLOEXEC: sockd opens its log and pid files as
    root, and a symbolic link planted at the path must not make it write elsewhere.

    Raises OSError; a link gives ELOOP with the text "a symbolic link (not followed)".
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link (not followed)", path) from None
        raise


class _FileHandler(logging.FileHandler):
    """The --log FILE handler: appends, never through a symbolic link (`open_no_follow`).

    Each line is one write(2) of the whole line.  Once the master has started its
    writer (`start_writer`), no process writes the file but the writer, a thread of the
    master: each line goes to it as one datagram, so lines are written in the order they
    are sent.  A write to a file shared by a hundred processes queues them on the file's
    locks (the file position's, the inode's), and a process preempted while it holds one
    holds up all the others: the 300 ms tail of doc/benchmarks.md.  A datagram to a UNIX
    socket takes no lock that sleeps.
    """

    feed: socket.socket | None = None   # where every process sends its lines
    owner = 0                           # the pid of the process whose thread writes
    _writer: threading.Thread | None = None
    lost = 0                            # lines that could not be written (a full disk)
    lost_why = ""

    def _open(self):
        fd = open_no_follow(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode("ascii", "backslashreplace")
            if self.feed is not None:
                try:
                    self.feed.send(line)
                    return
                except OSError:
                    pass    # the writer is gone (the master died): write it ourselves
            self._write(line)
        except Exception:   # noqa: BLE001 - logging's own contract: never raise
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """A line that cannot be made or written is counted, never a traceback on stderr."""
        self._lose(sys.exc_info()[1])

    def _lose(self, exc: BaseException | None) -> None:
        self.lost += 1
        self.lost_why = getattr(exc, "strerror", None) or type(exc).__name__

    def _write(self, data: bytes) -> None:
        """One write(2) of whole lines; after lines were lost (ENOSPC, say), first a line
        that says how many, so a gap in the log is never silent."""
        fd = self.stream.fileno()
        try:
            if self.lost:
                notice = logging.makeLogRecord({
                    "msg": "error -- %d log lines lost (%s)", "args": (self.lost, self.lost_why),
                    "levelno": logging.ERROR, "levelname": "ERROR"})
                os.write(fd, (self.format(notice) + "\n").encode("ascii", "backslashreplace"))
                self.lost = 0
            os.write(fd, data)
        except OSError as exc:
            self._lose(exc)

    def start_writer(self) -> None:
        """In the master: from now on, forked processes send their lines to a thread here."""
        self.feed, inbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.owner = os.getpid()
        for sock, option in ((self.feed, socket.SO_SNDBUF), (inbox, socket.SO_RCVBUF)):
            sock.setsockopt(socket.SOL_SOCKET, option, 1 << 22)
        self._inbox = inbox
        self.swap = threading.Lock()    # held while writing; reopen() holds it to swap
        self._writer = threading.Thread(target=self._write_lines, name="log writer",
                                        daemon=True)
        self._writer.start()

    def _write_lines(self) -> None:
        while data := self._inbox.recv(1 << 16):    # an empty datagram: close() is waiting
            with self.swap:
                self._write(data)

    def close(self) -> None:
        """In the master: let the writer write every line sent before, then close."""
        if self._writer is not None and os.getpid() == self.owner:
            try:
                self.feed.send(b"")
                self._writer.join(5.0)
            except OSError:
                pass
            self.feed = self._writer = None
        super().close()


def _require_socket(handler: logging.handlers.SysLogHandler, address: str) -> None:
    """Raise OSError when the handler could not reach the syslog socket at *address*:
    Python's handler would drop every line in silence, and sockd says so and exits 2
    instead (sockd(8), EXIT STATUS)."""
    if handler.socket.fileno() >= 0:
        return
    try:
        handler._connect_unixsocket(address)
    except OSError as exc:
        handler.close()
        raise OSError(exc.errno, f"no syslog socket at {address} "
                                 f"({exc.strerror or exc})") from None


def configure(where: str, *, syslog_address: str = "/dev/log",
              facility: str = "daemon", level: int = logging.INFO) -> logging.Handler:
    """Send the `sockd` logger to *where*: "syslog", "stderr" or a file path.

    Returns the handler, so that the daemonizer can keep its file descriptor.
    Raises ValueError for an unknown facility and OSError when the target
    cannot be opened.
    """
    for old in list(log.handlers):
        log.removeHandler(old)
        old.close()
    if where == "syslog":
        if facility not in FACILITIES:
            raise ValueError(f"unknown syslog facility {facility!r}")
        address = syslog_address
        if ":" in address and not os.path.exists(address):
            host, _, port = address.rpartition(":")
            handler = _SyslogHandler((host.strip("[]"), int(port)), FACILITIES[facility],
                                     socktype=socket.SOCK_DGRAM)
        else:
            handler = _SyslogHandler(address, FACILITIES[facility])
            _require_socket(handler, address)
        handler.setFormatter(logging.Formatter("sockd[%(process)d]: %(message)s"))
    else:
        handler = (logging.StreamHandler(sys.stderr) if where == "stderr"
                   else _FileHandler(where, encoding="ascii", errors="backslashreplace"))
        handler.setFormatter(_Formatter("%(asctime)s sockd[%(process)d]: %(message)s"))
    _lighten_records()
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    global _configured
    _configured = handler
    log.info = _info        # see _info: the instance's own info(), for every module's `log`
    return handler


_configured: logging.Handler | None = None      # the handler configure() gave the logger


def _info(msg: str, *args, **kwargs) -> None:
    """The `sockd` logger's info() once configure() has set it up: the same line, from
    the same handler's format() and emit(), without the logging module's general path.

    Each session writes two lines; logging.Logger.info() spends about 20 us on each
    before the handler sends it (a record of some thirty fields, the caller's file name
    split twice, the level and filter checks, the dispatch to handlers), five times what
    the send costs.  A record here carries only what sockd's formats and handlers read.
    Anything else the logger might be asked for (another handler, a filter, propagation,
    exc_info or extra) takes the general path.
    """
    handler = _configured
    if kwargs or log.propagate or log.filters or len(log.handlers) != 1 \
            or log.handlers[0] is not handler:
        logging.Logger.info(log, msg, *args, **kwargs)
        return
    if not log.isEnabledFor(logging.INFO):
        return
    if len(args) == 1 and isinstance(args[0], dict) and args[0]:
        args = args[0]      # as LogRecord does: "%(name)s" formats take one mapping
    record = logging.LogRecord.__new__(logging.LogRecord)
    record.__dict__.update(name=log.name, msg=msg, args=args, levelname="INFO",
                           levelno=logging.INFO, created=time.time(), msecs=0,
                           process=os.getpid(), exc_info=None, exc_text=None,
                           stack_info=None)
    handler.acquire()
    try:
        handler.emit(record)
    finally:
        handler.release()


def reopen() -> None:
    """Open the --log file again at its path, for log rotation (mv the file, then SIGHUP).

    The master calls this first thing on SIGHUP: its own lines, and those of
    every worker forked after, go to a new file at the path; a worker forked
    before keeps the file it inherited until it exits.  When the path cannot
    be opened, the old file stays in use and says why.  Syslog and standard
    error need nothing.
    """
    for handler in log.handlers:
        if not isinstance(handler, _FileHandler):
            continue
        try:
            stream = handler._open()
        except OSError as exc:
            log.error("error -- cannot reopen the log file %s: %s", handler.baseFilename,
                      exc.strerror or exc)
            continue
        handler.acquire()
        # Only the writer's own process has a writer to wait for: a process forked while
        # the writer held the lock has a copy of it that nobody will ever release.
        swap = getattr(handler, "swap", None) \
            if getattr(handler, "owner", 0) == os.getpid() else None
        if swap is not None:
            swap.acquire()
        try:
            old, handler.stream = handler.stream, stream
            old.close()
        finally:
            if swap is not None:
                swap.release()
            handler.release()


def start_writer() -> None:
    """The master, before it forks: lines of every process forked from now on go through
    one writer (see _FileHandler).  Nothing to do for syslog or standard error."""
    for handler in log.handlers:
        if isinstance(handler, _FileHandler):
            handler.start_writer()


def handler_fds() -> list[int]:
    """The file descriptors the logger holds (to keep them across daemonizing)."""
    fds = []
    for handler in log.handlers:
        stream = getattr(handler, "stream", None) or getattr(handler, "socket", None)
        if stream is not None:
            fds.append(stream.fileno())
    return fds
