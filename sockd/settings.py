"""The settings of one sockd run, as parsed from the command line.

A plain frozen value: the master, the workers and the sessions read it and
nothing writes it after start-up.
"""

import ipaddress
import os
from dataclasses import dataclass

DEFAULT_CONFIG = "/etc/sockd.conf"


@dataclass(frozen=True)
class Settings:
    config: str = DEFAULT_CONFIG
    config_given: bool = False          # -c was on the command line
    route: str | None = None
    passwd: str | None = None
    pam: str | None = None              # --pam: the PAM service name
    listen: tuple[str, ...] = ()
    foreground: bool = False
    inetd: bool = False
    pidfile: str | None = None
    user: str | None = None
    log: str = "syslog"
    syslog_address: str = "/dev/log"
    facility: str = "daemon"
    ident: str = "n"                    # -i relaxed "i", -I strict "I", else "n"
    min_spare: int = 5
    max_spare: int = 10
    max_workers: int = 64
    max_requests: int = 10000
    max_per_source: int | None = None   # None: per_source_cap decides
    negotiate_timeout: float = 30.0
    connect_timeout: float = 120.0
    bind_timeout: float = 120.0
    idle_timeout: float = 7200.0
    ident_timeout: float = 15.0
    grace: float = 30.0
    # --proxy-protocol: the load balancers whose PROXY headers are believed (sockd.balancer)
    proxy_protocol: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    debug: bool = False
    relay: str = "worker"               # --relay: who relays an established session
    relay_processes: int | None = None  # --relay-processes; None: one per CPU
    ftp_audit: frozenset[int] = frozenset({21})    # --ftp-audit: CONNECT ports audited as FTP

    @property
    def per_source_cap(self) -> int:
        """Sessions at once from one client address (--max-per-source); 0 means no cap.

        By default a quarter of --max-workers, but at least 8: one address cannot take a
        production pool, and small pools stay uncapped.
        """
        if self.max_per_source is None:
            return max(8, self.max_workers // 4)
        return self.max_per_source

    @property
    def relay_count(self) -> int:
        """Relay processes to keep (--relay shared): --relay-processes, else one per CPU."""
        if self.relay != "shared":
            return 0
        return self.relay_processes or len(os.sched_getaffinity(0))

    @property
    def uses_config_file(self) -> bool:
        """True when the rules come from a file: -c given, or /etc/sockd.conf present."""
        return self.config_given or os.path.exists(self.config)
