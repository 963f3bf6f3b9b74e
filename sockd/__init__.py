"""sockd: a preforking SOCKS 4, 4a and 5 server in the tradition of CSTC SOCKS."""

__version__ = "5.0.0.dev0"
