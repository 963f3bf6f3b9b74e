"""The SOCKS client programs: rfinger, rwhois, rtelnet and rftp.

Each program is a module with a ``main(argv)``; their sockets come from `clients.programs.net`
and nowhere else, so that socks.conf decides for all of them in one place.  The protocol parts
that need no socket (telnet option negotiation, FTP replies and addresses, the progress bar,
the FASCIST syslog line) are pure modules beside them.
"""
