"""The pure parts of the client programs: telnet negotiation, FTP replies and addresses,
the progress bar, the FASCIST line, text shown on a terminal."""

import pytest

from clients.programs import telnet_options as t
from clients.programs.fascist import datagram, message
from clients.programs.ftp_commands import (
    AsciiDecoder,
    ProtocolError,
    Reply,
    ReplyReader,
    ascii_encode,
    command_text,
    parse_epsv,
    parse_pasv,
    port_command,
)
from clients.programs.progress import bar, human
from clients.programs.rfinger import parse_target, query_line
from clients.programs.terminal import for_terminal

IAC, WILL, WONT, DO, DONT, SB, SE = t.IAC, t.WILL, t.WONT, t.DO, t.DONT, t.SB, t.SE


def neg(verb, option):
    return bytes((IAC, verb, option))


# -- telnet ------------------------------------------------------------------------------------


def test_accepts_echo_and_sga_refuses_the_rest_and_never_repeats():
    c = t.TelnetClient()
    assert c.start() == neg(DO, t.SGA)
    out = c.receive(neg(WILL, t.SGA) + neg(WILL, t.ECHO) + neg(WILL, 99) + neg(DO, 98))
    assert out.reply == neg(DO, t.ECHO) + neg(DONT, 99) + neg(WONT, 98)   # SGA was asked
    assert c.remote_echo()
    # the same requests again: already in that state, no answer (RFC 854 loop rule)
    assert c.receive(neg(WILL, t.ECHO) + neg(WILL, t.SGA)).reply == b""
    assert c.receive(neg(WONT, t.ECHO)).reply == neg(DONT, t.ECHO)
    assert not c.remote_echo()
    assert c.receive(neg(WONT, t.ECHO)).reply == b""


def test_terminal_type_and_window_size():
    c = t.TelnetClient(terminal="xterm", window=(80, 255))
    out = c.receive(neg(DO, t.TTYPE) + neg(DO, t.NAWS))
    assert out.reply == neg(WILL, t.TTYPE) + neg(WILL, t.NAWS) \
        + bytes((IAC, SB, t.NAWS, 0, 80, 0, 255, 255, IAC, SE))     # 255 doubled
    out = c.receive(bytes((IAC, SB, t.TTYPE, 1, IAC, SE)))
    assert out.reply == bytes((IAC, SB, t.TTYPE, 0)) + b"XTERM" + bytes((IAC, SE))
    assert t.TelnetClient().receive(neg(DO, t.NAWS)).reply == neg(WONT, t.NAWS)


def test_data_commands_and_split_input():
    c = t.TelnetClient()
    stream = b"a\xff\xffb\r\0c\r\nd" + bytes((IAC, t.GA)) + neg(WILL, 99) + b"e"
    whole = c.receive(stream)
    assert whole.data == b"a\xffb\rc\r\nde"
    assert t.Command(t.GA) in whole.events
    c2 = t.TelnetClient()
    pieces = [c2.receive(bytes((b,))) for b in stream]
    assert b"".join(p.data for p in pieces) == whole.data
    assert b"".join(p.reply for p in pieces) == whole.reply == neg(DONT, 99)


def test_timing_mark_refused_and_flushing_until_the_answer():
    c = t.TelnetClient()
    assert c.receive(neg(DO, t.TM)).reply == neg(WONT, t.TM)
    assert c.flush_request() == neg(DO, t.TM)
    out = c.receive(b"thrown away" + neg(WILL, t.TM) + b"kept")
    assert out.data == b"kept" and t.TimingMark() in out.events


def test_encode():
    c = t.TelnetClient()
    assert c.encode(b"a\xffb\r") == b"a\xff\xffb\r\0"
    assert c.encode(b"one\ntwo\r\n", lines=True) == b"one\r\ntwo\r\n"


# -- FTP ---------------------------------------------------------------------------------------


def test_multiline_reply():
    r = ReplyReader()
    assert r.feed("230-Welcome\r\n") is None
    assert r.feed(" 230 indented: not the end\r\n") is None  # RFC 959 §4.2
    reply = r.feed("230 Login ok.\r\n")
    assert reply == Reply(230, ("230-Welcome", " 230 indented: not the end",
                                "230 Login ok."))
    assert r.feed("200 ok") == Reply(200, ("200 ok",))
    with pytest.raises(ProtocolError):
        r.feed("hello")


def test_passive_replies_and_port_commands():
    assert parse_pasv(Reply(227, ("227 Entering Passive Mode (127,0,0,1,4,1).",))) == \
        ("127.0.0.1", 1025)
    assert parse_epsv(Reply(229, ("229 Extended Passive (|||6446|)",))) == 6446
    with pytest.raises(ProtocolError):
        parse_pasv(Reply(227, ("227 (300,0,0,1,4,1)",)))
    assert port_command("10.1.2.3", 1025) == "PORT 10,1,2,3,4,1"
    assert port_command("::1", 2000) == "EPRT |2|::1|2000|"
    assert port_command("::ffff:10.0.0.1", 1) == "PORT 10,0,0,1,0,1"
    with pytest.raises(ValueError):
        command_text("RETR", "a\r\nDELE b")


def test_ascii_conversion_across_reads():
    d = AsciiDecoder()
    assert d.feed(b"a\r") + d.feed(b"\nb\r") + d.feed(b"x") + d.end() == b"a\nb\rx"
    assert ascii_encode(b"a\nb\r\n") == b"a\r\nb\r\n"


# -- progress, FASCIST, terminal, finger -------------------------------------------------------


def test_progress_bar():
    assert human(512) == "512 B" and human(1536) == "1.5 KiB"
    line = bar(512 * 1024, 1024 * 1024, 2.0, width=80)
    assert line.startswith("  50% |") and "256.0 KiB/s" in line and "00:02 ETA" in line
    assert len(line) <= 80
    assert "ETA" not in bar(1024, 1024, 1.0) and bar(10, None, 1.0).strip().startswith("10 B")


def test_fascist_line_escapes_the_name():
    text = message("alice", "ftp.example", "get", "a b\n\x1b.bin", 10, True)
    assert text == ("transfer user=alice host=ftp.example direction=get "
                    r"file=a\x20b\x0a\x1b.bin bytes=10 status=complete")
    assert datagram("x", 42, 0).startswith(b"<30>") and datagram("x", 42, 0).endswith(
        b" rftp[42]: x")


def test_text_for_a_terminal():
    assert for_terminal(b"ok\r\n\tx\x1b[2J\x07\x7f\xc3\xa9\xff\xc2\x9b") == \
        "ok\n\tx^[[2J^G^?é\\xff\\x9b".encode()


def test_finger_targets():
    assert parse_target("alice@host") == ("alice", "host")
    assert parse_target("a@b@c") == ("a@b", "c")
    assert parse_target("alice") == ("alice", "localhost")
    assert query_line("alice", True) == b"/W alice" and query_line("", True) == b"/W"
