"""The `sockd` command: parse the command line, then check, serve inetd, or run the master.

Exit status (sockd(8)): 0 after a clean stop, -t or -ver; 1 for a
configuration error; 2 for a command-line error; 3 when the listeners cannot
be bound or the workers cannot start.  --status has its own (sockd.status).
"""

import argparse
import ipaddress
import logging
import os
import pwd
import socket
import sys

from sockd import __version__, auth, listeners, route, rules
from sockd import log as sockd_log
from sockd import passwords as passwd_file
from sockd.master import Master, load_rules
from sockd.settings import DEFAULT_CONFIG, Settings
from sockd.worker import drop_privileges

log = logging.getLogger("sockd")

EXIT_CONFIG = 1
EXIT_USAGE = 2
EXIT_LISTEN = 3


def banner(multi_homed: bool) -> str:
    homed = "multi-homed" if multi_homed else "single-homed"
    return (f"\tsockd {homed}, stand-alone and inetd SOCKS proxy server version {__version__}.\n"
            "\tSupports SOCKS 4, 4a and 5 (CONNECT, no authentication or username/password).")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sockd", description="SOCKS 4, 4a and 5 proxy server.")
    p.add_argument("--version", action="store_true", help="print the version banner and exit")
    ident = p.add_mutually_exclusive_group()
    ident.add_argument("-i", dest="ident", action="store_const", const="i", default="n",
                       help="relaxed ident policy for rules without ?=")
    ident.add_argument("-I", dest="ident", action="store_const", const="I",
                       help="strict ident policy for rules without ?=")
    p.add_argument("-f", "--foreground", action="store_true", help="do not detach")
    p.add_argument("-c", "--config", metavar="FILE", help=f"rules file (default {DEFAULT_CONFIG})")
    p.add_argument("-l", "--listen", metavar="ADDR:PORT", action="append", default=[],
                   help="listen here (repeatable; [::1]:1080 for IPv6)")
    p.add_argument("-t", "--check", action="store_true",
                   help="check the files, print FILE:LINE: message for each error, exit")
    p.add_argument("--route", metavar="FILE", help="multi-homed route file (sockd.route)")
    p.add_argument("--passwd", metavar="FILE", help="SOCKS5 username/password file")
    p.add_argument("--pam", metavar="SERVICE", type=_pam_service,
                   help="check SOCKS5 passwords through this PAM service too")
    p.add_argument("--inetd", action="store_true", help="serve the connection on standard input")
    p.add_argument("--pidfile", metavar="FILE")
    p.add_argument("--user", metavar="NAME", help="workers run as this user")
    p.add_argument("--log", metavar="WHERE", help="syslog, stderr or a file")
    p.add_argument("--syslog-address", metavar="PATH", default="/dev/log")
    p.add_argument("--facility", metavar="NAME", default="daemon")
    p.add_argument("--debug", action="store_true", help="log debugging detail")
    p.add_argument("--status", action="store_true",
                   help="show the pool and sessions of the running server (its --pidfile, "
                        "default /run/sockd.pid), then exit")
    p.add_argument("--json", action="store_true", help="with --status: print JSON")
    for name, default in (("min-spare", 5), ("max-spare", 10), ("max-workers", 64),
                          ("max-requests", 10000)):
        p.add_argument(f"--{name}", type=_positive_int, default=default, metavar="N")
    p.add_argument("--max-per-source", type=_non_negative_int, metavar="N",
                   help="sessions at once from one client address (default: a quarter of "
                        "--max-workers, at least 8; 0: no cap)")
    for name, default in (("negotiate", 30), ("connect", 120), ("bind", 120), ("idle", 7200),
                          ("ident", 15)):
        p.add_argument(f"--{name}-timeout", type=_positive_float, default=default, metavar="S")
    p.add_argument("--grace", type=_non_negative_float, default=30, metavar="S")
    p.add_argument("--relay", choices=("worker", "shared"), default="worker",
                   help="who relays an established session: its worker, or relay processes")
    p.add_argument("--relay-processes", type=_positive_int, metavar="N",
                   help="relay processes with --relay shared (default: one per CPU)")
    p.add_argument("--ftp-audit", type=_ports, default="21", metavar="PORTS",
                   help="log the files FTP clients work on, for CONNECTs to these ports "
                        "(comma-separated numbers or service names; empty: none)")
    p.add_argument("--proxy-protocol", type=_networks, action="append", default=[],
                   metavar="CIDR[,CIDR...]",
                   help="load balancers whose PROXY protocol headers are believed, and "
                        "required (repeatable)")
    return p


def _ports(text: str) -> frozenset[int]:
    """--ftp-audit: comma-separated port numbers or tcp service names; empty means none."""
    ports = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item.isdigit():
            port = int(item)
        else:
            try:
                port = socket.getservbyname(item, "tcp")
            except OSError:
                raise argparse.ArgumentTypeError(f"no such tcp service: {item}") from None
        if not 1 <= port <= 65535:
            raise argparse.ArgumentTypeError(f"port out of range: {item}")
        ports.add(port)
    return frozenset(ports)


def _pam_service(text: str) -> str:
    if problem := auth.pam_service_problem(text):
        raise argparse.ArgumentTypeError(problem)
    return text


def _networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """CIDR[,CIDR...]: an address alone is one host; host bits after the mask are an error."""
    networks = []
    for part in text.split(","):
        try:
            networks.append(ipaddress.ip_network(part.strip()))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"bad network {part.strip()!r}: {exc}") from None
    return networks


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def parse_settings(argv: list[str]) -> tuple[Settings, argparse.Namespace]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.json and not args.status:
        parser.error("--json goes with --status")
    if args.min_spare > args.max_spare:
        parser.error("--min-spare must not be more than --max-spare")
    if args.max_spare > args.max_workers:
        parser.error("--max-spare must not be more than --max-workers")
    for text in args.listen:
        try:
            listeners.parse_address(text)
        except ValueError as exc:
            parser.error(str(exc))
    where = args.log or ("stderr" if args.foreground or args.check else "syslog")
    if not (args.foreground or args.check):
        # A daemon works in /: the files it re-reads on SIGHUP, and the pid file it removes
        # at the end, are named from where it was started.
        for name in ("config", "route", "passwd", "pidfile"):
            if getattr(args, name) is not None:
                setattr(args, name, os.path.abspath(getattr(args, name)))
    settings = Settings(
        config=args.config or DEFAULT_CONFIG, config_given=args.config is not None,
        route=args.route, passwd=args.passwd, pam=args.pam, listen=tuple(args.listen),
        foreground=args.foreground, inetd=args.inetd, pidfile=args.pidfile, user=args.user,
        log=where, syslog_address=args.syslog_address, facility=args.facility,
        ident=args.ident, min_spare=args.min_spare, max_spare=args.max_spare,
        max_workers=args.max_workers, max_requests=args.max_requests,
        max_per_source=args.max_per_source,
        negotiate_timeout=args.negotiate_timeout, connect_timeout=args.connect_timeout,
        bind_timeout=args.bind_timeout, idle_timeout=args.idle_timeout,
        ident_timeout=args.ident_timeout, grace=args.grace, debug=args.debug,
        relay=args.relay, relay_processes=args.relay_processes,
        ftp_audit=args.ftp_audit,
        proxy_protocol=tuple(net for nets in args.proxy_protocol for net in nets))
    return settings, args


def check(settings: Settings) -> int:
    """-t: every error of every file, FILE:LINE: message each; 0 or 1."""
    errors: list[str] = []
    if settings.uses_config_file:
        errors += [str(e) for e in rules.check(settings.config)]
    else:
        print(f"sockd: no {settings.config}: the embedded default would be in force "
              "(clients from 127.0.0.0/8 and ::1 only)")
    if settings.route:
        errors += [str(e) for e in route.check_routes(settings.route)]
    if settings.passwd:
        try:
            passwd_file.load(settings.passwd)
        except passwd_file.PasswordError as exc:
            errors.append(str(exc))
    if settings.pam:
        errors += auth.pam_problems(settings.pam)
    for error in errors:
        print(error, file=sys.stderr)
    if not errors:
        print("sockd: configuration OK")
    return EXIT_CONFIG if errors else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "-ver" in argv:
        print(banner("--route" in argv))
        return 0
    try:
        settings, args = parse_settings(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else 0
    if args.version:
        print(banner(settings.route is not None))
        return 0
    if args.status:
        from sockd import status
        return status.main(args.pidfile or status.DEFAULT_PIDFILE, as_json=args.json)
    if args.check:
        return check(settings)
    try:
        sockd_log.configure(settings.log, syslog_address=settings.syslog_address,
                            facility=settings.facility,
                            level=logging.DEBUG if settings.debug else logging.INFO)
    except (OSError, ValueError) as exc:
        _say(f"cannot log to {settings.log}: {_reason(exc)}")
        return EXIT_USAGE
    if settings.inetd:
        problem = listeners.stdin_connection_problem()
        if problem is not None:
            return _fail(settings, f"--inetd: {problem}", EXIT_USAGE)
    try:
        ruleset = load_rules(settings)
        passwords = passwd_file.load(settings.passwd) if settings.passwd else None
    except rules.ConfigError as exc:        # PasswordError is one too
        return _fail(settings, str(exc), EXIT_CONFIG)
    if settings.inetd or listeners.stdin_is_connection():
        return serve_inetd(settings, ruleset, passwords)
    if settings.user is not None:
        try:
            pwd.getpwnam(settings.user)
        except KeyError:
            # Said before detaching: the workers could never start.
            _say(f"no such user: {settings.user}")
            if settings.log != "stderr":
                log.error("error -- no such user: %s", settings.user)
            return EXIT_LISTEN
    return serve_standalone(settings, ruleset, passwords)


def _say(message: str) -> None:
    """One line on standard error, which may not be writable (inetd `wait` mode hands sockd
    its listening socket as standard error too): never a traceback for that."""
    try:
        print(f"sockd: {message}", file=sys.stderr, flush=True)
    except OSError:
        pass


def _fail(settings: Settings, message: str, code: int) -> int:
    """Say why sockd cannot start, on standard error and in the log (once when both are the
    same), and return the exit status."""
    _say(message)
    if settings.log != "stderr":
        log.error("error -- %s", message)
    return code


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def serve_inetd(settings: Settings, ruleset, passwords) -> int:
    """inetd `nowait`: the one client is on standard input.

    The files were read as the user inetd started us as; the session and its
    hooks run as --user, like a worker's.
    """
    from sockd import hooks
    from sockd.session import Session, Status

    try:
        drop_privileges(settings.user)
    except KeyError:
        return _fail(settings, f"no such user: {settings.user}", EXIT_LISTEN)
    except OSError as exc:
        return _fail(settings, f"cannot become user {settings.user}: {_reason(exc)}",
                     EXIT_LISTEN)
    from sockd import balancer

    sock = socket.socket(fileno=os.dup(0))
    runner = hooks.HookRunner(logger=log)
    try:
        arrival = balancer.arrival(sock, sock.getpeername(), settings.proxy_protocol,
                                   settings.negotiate_timeout)
        if arrival is None:
            sock.close()
        else:
            Session(sock, settings, ruleset, runner, Status(), passwords,
                    remote=(arrival.address, arrival.port),
                    balanced=arrival.balancer is not None, preread=arrival.preread).run()
    except OSError:
        sock.close()
    runner.wait()
    return 0


def serve_standalone(settings: Settings, ruleset, passwords) -> int:
    try:
        socks = listeners.systemd_listeners()
        if socks is None:
            socks = ([listeners.bind(*listeners.parse_address(a)) for a in settings.listen]
                     or listeners.default_listeners())
    except listeners.ListenError as exc:
        return _fail(settings, str(exc), EXIT_LISTEN)
    pid_fd = None
    if settings.pidfile:
        # Created before detaching, so that a failure is seen by the starting command.
        try:
            pid_fd = sockd_log.open_no_follow(settings.pidfile,
                                              os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            for sock in socks:
                sock.close()
            return _fail(settings, f"cannot write the pid file {settings.pidfile}: "
                         f"{_reason(exc)}", EXIT_CONFIG)
    ready = None if settings.foreground else _detach(socks, pid_fd)
    if pid_fd is not None:
        try:
            write_pid(pid_fd)   # after detaching: the pid is the daemon's
        except OSError as exc:  # (a full disk): the starting command sees the daemon end
            log.error("error -- cannot write the pid file %s: %s", settings.pidfile,
                      _reason(exc))
            _remove(settings.pidfile)
            return EXIT_CONFIG
    log.info("started -- sockd %s, pid %d, listening on %s", __version__, os.getpid(),
             ", ".join(listeners.describe(s) for s in socks))
    if ready is not None:
        os.write(ready, b"ready")
        os.close(ready)
    try:
        return Master(settings, ruleset, socks, passwords).run()
    finally:
        if settings.pidfile:
            _remove(settings.pidfile)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_pid(fd: int) -> None:
    """Write this process's pid to the pid file opened as *fd*, and close it."""
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)


def _detach(socks, pid_fd: int | None) -> int:
    """Become a daemon (python-daemon), keeping the listeners, the log and the pid file open.

    The starting command waits until the daemon writes "ready" to the pipe whose end this
    returns (after its pid file is written), so that a script that starts sockd finds the
    daemon's pid in the pid file; it exits 0 then, or 1 if the daemon ended first.
    """
    import daemon

    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    if os.fork() > 0:                       # the starting command
        os.close(ready_w)
        word = os.read(ready_r, 16)         # b"" when the daemon is gone without a word
        os._exit(0 if word == b"ready" else EXIT_CONFIG)
    os.close(ready_r)
    keep = [s.fileno() for s in socks] + sockd_log.handler_fds() + [ready_w]
    if pid_fd is not None:
        keep.append(pid_fd)
    context = daemon.DaemonContext(files_preserve=keep, working_directory="/", umask=0o022,
                                   signal_map={}, detach_process=True)
    context.open()
    return ready_w
