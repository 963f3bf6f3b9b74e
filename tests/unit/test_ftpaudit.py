"""The FTP command reader and the audit's log lines, without sockets.

Each stream is fed whole, byte by byte, and in random pieces: the commands
read must not depend on how the bytes arrived.
"""

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockd import cli
from sockd.ftpaudit import MAX_LINE, Audit, AuditEnd, CommandReader, FtpCommand
from sockd.protocol import NEED_DATA

IAC = b"\xff"
IP, DM, SB, SE, WILL, DO = b"\xf4", b"\xf2", b"\xfa", b"\xf0", b"\xfb", b"\xfd"


def events(reader: CommandReader) -> list:
    found = []
    while (event := reader.next_event()) is not NEED_DATA:
        found.append(event)
    return found


def read(pieces) -> list:
    reader = CommandReader()
    found = []
    for piece in pieces:
        reader.feed(piece)
        found += events(reader)
    return found


def whole(data: bytes) -> list:
    return read([data])


def bytewise(data: bytes) -> list:
    return read([data[i:i + 1] for i in range(len(data))])


FEEDS = [whole, bytewise]


def cmd(verb: str, argument: str = "") -> FtpCommand:
    return FtpCommand(verb, argument)


SESSION = (b"USER alice\r\nPASS s3cret\r\nTYPE I\r\nPASV\r\nRETR file.bin\r\n"
           b"STOR up load.bin\r\nQUIT\r\n")
SESSION_COMMANDS = [cmd("USER", "alice"), cmd("PASS", "s3cret"), cmd("TYPE", "I"), cmd("PASV"),
                    cmd("RETR", "file.bin"), cmd("STOR", "up load.bin"), cmd("QUIT")]


@pytest.mark.parametrize("feed", FEEDS)
def test_pipelined_commands_are_read_in_order(feed):
    assert feed(SESSION) == SESSION_COMMANDS


@settings(deadline=None, max_examples=200)
@given(cuts=st.lists(st.integers(0, len(SESSION)), max_size=20))
def test_any_split_reads_the_same(cuts):
    points = [0, *sorted(cuts), len(SESSION)]
    assert read([SESSION[a:b] for a, b in zip(points, points[1:], strict=False)]) \
        == SESSION_COMMANDS


@pytest.mark.parametrize("feed", FEEDS)
def test_verbs_are_upper_cased_and_arguments_kept_as_sent(feed):
    assert feed(b"retr  two  spaces \r\nmkd caf\xc3\xa9\r\nrnto a\tb\r\n") == \
        [cmd("RETR", " two  spaces "), cmd("MKD", "caf\xc3\xa9"), cmd("RNTO", "a\tb")]


@pytest.mark.parametrize("feed", FEEDS)
def test_a_bare_lf_ends_a_line_too_and_a_partial_line_waits(feed):
    reader = CommandReader()
    reader.feed(b"DELE x\nRMD y\r\nMKD half")
    assert events(reader) == [cmd("DELE", "x"), cmd("RMD", "y")]
    reader.feed(b"way\r")
    assert events(reader) == []
    reader.feed(b"\n")
    assert events(reader) == [cmd("MKD", "halfway")]


@pytest.mark.parametrize("feed", FEEDS)
def test_telnet_sequences_are_skipped(feed):
    # An ABOR as RFC 959 §4.1.3 sends it: IAC IP, IAC DM (the SYNCH), then the command;
    # option negotiation and a subnegotiation (with an escaped 255 inside) around it.
    stream = (IAC + IP + IAC + DM + b"ABOR\r\n" + IAC + WILL + b"\x01" + b"RE" + IAC + DO
              + b"\x18" + b"TR a" + IAC + SB + b"\x18\x00" + IAC + IAC + b"xx" + IAC + SE
              + b"b\r\n")
    assert feed(stream) == [cmd("ABOR"), cmd("RETR", "ab")]


@pytest.mark.parametrize("feed", FEEDS)
def test_iac_iac_is_the_byte_255(feed):
    assert feed(b"STOR a" + IAC + IAC + b"b\r\n") == [cmd("STOR", "a\xffb")]


@pytest.mark.parametrize("feed", FEEDS)
def test_a_line_at_the_limit_is_read(feed):
    name = "n" * (MAX_LINE - 5)
    assert feed(b"RETR " + name.encode() + b"\r\nDELE x\r\n") == \
        [cmd("RETR", name), cmd("DELE", "x")]


@pytest.mark.parametrize("feed", FEEDS)
def test_an_over_long_line_ends_the_reading(feed):
    stream = b"USER bob\r\nRETR " + b"n" * MAX_LINE + b"\r\nDELE hidden\r\n"
    found = feed(stream)
    assert found[0] == cmd("USER", "bob")
    assert found[1:] == [AuditEnd(f"command line longer than {MAX_LINE} bytes")]


def test_an_over_long_line_without_an_end_holds_no_more_than_the_limit():
    reader = CommandReader()
    for _ in range(64):
        reader.feed(b"x" * 1000)
    assert events(reader) == [AuditEnd(f"command line longer than {MAX_LINE} bytes")]
    assert reader.ended and len(reader._line) == 0
    reader.feed(b"\r\nRETR later\r\n")
    assert events(reader) == []


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("mechanism", ["TLS", "SSL", "tls-c", "GSSAPI"])
def test_auth_ends_the_reading(feed, mechanism):
    stream = (b"AUTH " + mechanism.encode() + b"\r\n"
              b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03RETR secret\r\n")
    assert feed(b"USER x\r\n" + stream) == [
        cmd("USER", "x"),
        AuditEnd(f"AUTH {mechanism}: the control connection is protected from here on")]


def test_the_auth_mechanism_is_escaped():
    assert whole(b"auth T S\x1b\r\n") == \
        [AuditEnd("AUTH T\\x20S\\x1b: the control connection is protected from here on")]


# -- the audit's log lines ------------------------------------------------------------


STORY = "Connect from -(unknown)@127.0.0.1:4000 to 127.0.0.1:21 (ftp) rule=default session=1.1"


@pytest.fixture
def audit_lines(caplog):
    caplog.set_level(logging.INFO, logger="sockd")

    def run(pieces):
        audit = Audit(lambda: STORY)
        for piece in pieces:
            audit(piece)
        return [r.getMessage() for r in caplog.records if r.name == "sockd"]
    return run


def test_each_audited_command_is_one_line_naming_the_ftp_user(audit_lines):
    stream = (b"RETR before.user\r\nUSER ftpuser\r\nPASS hunter2\r\nCWD /pub\r\nLIST\r\n"
              b"RETR file.bin\r\nSTOR a b\r\nSTOU\r\nAPPE log\r\nDELE old\r\nRNFR x\r\n"
              b"RNTO y\r\nMKD d\r\nRMD d\r\nUSER other\r\nPASS hunter3\r\nRETR again\r\n"
              b"REIN\r\nDELE after.rein\r\n")
    lines = audit_lines([stream])
    assert lines == [f"ftp -- {STORY}: USER {user} {what}" for user, what in [
        ("-", "RETR before.user"), ("ftpuser", "RETR file.bin"), ("ftpuser", "STOR a\\x20b"),
        ("ftpuser", "STOU -"), ("ftpuser", "APPE log"), ("ftpuser", "DELE old"),
        ("ftpuser", "RNFR x"), ("ftpuser", "RNTO y"), ("ftpuser", "MKD d"),
        ("ftpuser", "RMD d"), ("other", "RETR again"), ("-", "DELE after.rein")]]
    assert not any("hunter" in line for line in lines)


def test_names_and_users_are_escaped(audit_lines):
    lines = audit_lines([b"USER a\\b\r\nRETR caf\xc3\xa9\x1b[2J\nx\r\n"])
    assert lines == [f"ftp -- {STORY}: USER a\\x5cb RETR caf\\xc3\\xa9\\x1b[2J"]


def test_long_names_are_cut(audit_lines):
    lines = audit_lines([b"RETR " + b"n" * 2000 + b"\r\n"])
    assert lines == [f"ftp -- {STORY}: USER - RETR {'n' * 1024}"]


def test_the_audit_stops_once_after_auth(audit_lines):
    lines = audit_lines([b"USER u\r\nRETR one\r\nAUTH TLS\r\n", b"\x16\x03\x01RETR two\r\n",
                         b"AUTH TLS\r\n"])
    assert lines == [f"ftp -- {STORY}: USER u RETR one",
                     f"ftp -- {STORY}: audit stopped: AUTH TLS: the control connection is "
                     "protected from here on"]


def test_the_audit_stops_once_at_an_over_long_line(audit_lines):
    lines = audit_lines([b"RETR " + b"x" * 5000, b"x" * 5000, b"\r\nRETR y\r\n"])
    assert lines == [f"ftp -- {STORY}: audit stopped: command line longer than 4096 bytes"]


@settings(deadline=None, max_examples=300)
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=10))
def test_any_bytes_in_any_pieces_never_raise_and_read_alike(data, cuts):
    points = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    pieces = [data[a:b] for a, b in zip(points, points[1:], strict=False)]
    assert read(pieces) == whole(data)


# -- --ftp-audit ------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "ports"), [
    ([], {21}), (["--ftp-audit", ""], set()), (["--ftp-audit="], set()),
    (["--ftp-audit", "ftp, 2121,21"], {21, 2121}), (["--ftp-audit", "990,"], {990})])
def test_ftp_audit_ports(argv, ports):
    assert cli.parse_settings(argv)[0].ftp_audit == ports


@pytest.mark.parametrize("value", ["0", "65536", "no-such-service", "-21", "21;22"])
def test_bad_ftp_audit_ports_are_usage_errors(value, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse_settings(["--ftp-audit", value])
    assert exc.value.code == 2
    assert "--ftp-audit" in capsys.readouterr().err
