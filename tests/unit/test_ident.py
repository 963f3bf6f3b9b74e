"""Unit tests for sockd.identwire, the sans-I/O RFC 1413 reply parser and line reader.

Every reply vector is parsed as a whole line and also fed to ReplyReader
whole, one byte at a time, and with trailing bytes after its line; the
reader's bound, early close and end-of-stream rules are checked on their own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockd import identwire
from sockd.identwire import (
    MAX_REPLY,
    AnswerKind,
    IdentAnswer,
    ReplyReader,
    parse_reply,
    query_line,
)
from sockd.protocol import NEED_DATA

CPORT, SPORT = 40312, 1080   # the client's port (on the identd's host), then ours


def user(name: str, opsys: str = "UNIX", charset: str = "") -> IdentAnswer:
    return IdentAnswer.of_user(name, opsys, charset)


def no(reason: str) -> IdentAnswer:
    return IdentAnswer.no_answer(reason)


# line (without CR LF) -> answer
VECTORS: dict[bytes, IdentAnswer] = {
    # RFC 1413 §6 examples and what real identds write
    b"40312 , 1080 : USERID : UNIX : stjohns": user("stjohns"),
    b"40312,1080:USERID:UNIX:root": user("root"),                         # oidentd
    b"40312, 1080 : USERID : UNIX :alice": user("alice"),
    b"  40312\t,\t1080\t:\tUSERID\t:\tUNIX\t:\tbob\t ": user("bob"),
    b"40312 , 1080 : userid : unix : carol": user("carol", "unix"),       # keyword any case
    # opsys and charset: any value, charset optional
    b"40312 , 1080 : USERID : OTHER : 0xDEADBEEF": user("0xDEADBEEF", "OTHER"),
    b"40312 , 1080 : USERID : UNIX , US-ASCII : dave": user("dave", "UNIX", "US-ASCII"),
    b"40312 , 1080 : USERID : OTHER,UTF-8 : \xc3\xa9mile": user("\xc3\xa9mile", "OTHER", "UTF-8"),
    b"40312 , 1080 : USERID : SOMETHING-NEW , X-CHARSET : eve": user("eve", "SOMETHING-NEW",
                                                                      "X-CHARSET"),
    b"40312 , 1080 : USERID :  : frank": user("frank", ""),                # empty opsys accepted
    b"40312 , 1080 : USERID : UN\\:IX : gina": user("gina", "UN:IX"),       # §6 quoted colon
    # the user-id is everything after the opsys field, verbatim
    b"40312 , 1080 : USERID : UNIX : a:b:c": user("a:b:c"),
    b"40312 , 1080 : USERID : UNIX : John Q. Public": user("John Q. Public"),
    b"40312 , 1080 : USERID : UNIX : $(rm -rf /);`id`|&>x'\"*?": user("$(rm -rf /);`id`|&>x'\"*?"),
    b"40312 , 1080 : USERID : UNIX : \xff\xfe\x80\x01\x7f": user("\xff\xfe\x80\x01\x7f"),
    b"40312 , 1080 : USERID : UNIX : nul\x00inside": user("nul\x00inside"),
    b"40312 , 1080 : USERID : UNIX : lone\rcr": user("lone\rcr"),
    b"40312 , 1080 : USERID : UNIX : back\\slash,comma": user("back\\slash,comma"),
    b"40312 , 1080 : USERID : UNIX : " + b"x" * 900: user("x" * 900),
    # ERROR replies (§6 error types, and anything else the identd says)
    b"40312 , 1080 : ERROR : NO-USER": no("ERROR : NO-USER"),
    b"40312,1080:ERROR:HIDDEN-USER": no("ERROR : HIDDEN-USER"),
    b"40312 , 1080 : ERROR : INVALID-PORT": no("ERROR : INVALID-PORT"),
    b"40312 , 1080 : error : UNKNOWN-ERROR": no("ERROR : UNKNOWN-ERROR"),
    b"40312 , 1080 : ERROR : X-LOCAL-THING": no("ERROR : X-LOCAL-THING"),
    b"40312 , 1080 : ERROR": no("ERROR"),
    b"40312 , 1080 : ERROR :": no("ERROR"),
    b"40312 , 1080 : ERROR : \x1b[31mred\n": no("ERROR"),             # never copied to the log
    b"40312 , 1080 : ERROR : " + b"E" * 65: no("ERROR"),              # longer than a token
    # the ports must be the ones asked about
    b"1080 , 40312 : USERID : UNIX : swapped": no("reply for other ports"),
    b"40313 , 1080 : USERID : UNIX : other": no("reply for other ports"),
    b"0 , 0 : ERROR : INVALID-PORT": no("reply for other ports"),
    b"040312 , 01080 : USERID : UNIX : bad": no("garbage"),           # 6 digits
    b"40312 1080 : USERID : UNIX : nocomma": no("garbage"),
    b"40312 , : USERID : UNIX : half": no("garbage"),
    b"-1 , 1080 : USERID : UNIX : neg": no("garbage"),
    b"\xd9\xa1 , 1080 : USERID : UNIX : arabic": no("garbage"),
    # missing or unknown fields
    b"": no("garbage"),
    b"hello": no("garbage"),
    b"40312 , 1080": no("garbage"),
    b"40312 , 1080 :": no("garbage"),
    b"40312 , 1080 : USERID": no("garbage"),
    b"40312 , 1080 : USERID : UNIX": no("garbage"),
    b"40312 , 1080 : USERID : UNIX :": no("garbage"),                  # empty user-id
    b"40312 , 1080 : USERID : UNIX :   \t ": no("garbage"),            # only blanks
    b"40312 , 1080 : USER-ID : UNIX : typo": no("garbage"),
    b"40312 , 1080 : OK : UNIX : nope": no("garbage"),
    b"SSH-2.0-OpenSSH_9.2": no("garbage"),
    b"HTTP/1.0 400 Bad Request": no("garbage"),
}


@pytest.mark.parametrize("line", VECTORS, ids=repr)
@pytest.mark.parametrize("eol", [b"\r\n", b"\n", b""], ids=["crlf", "lf", "none"])
def test_parse_reply(line: bytes, eol: bytes) -> None:
    assert parse_reply(line + eol, CPORT, SPORT) == VECTORS[line]


def read(chunks: list[bytes], eof: bool = True) -> IdentAnswer:
    """What ReplyReader answers after these chunks (and the end of the stream)."""
    reader = ReplyReader(CPORT, SPORT)
    for chunk in chunks:
        answer = reader.next_answer()
        if answer is not NEED_DATA:
            return answer
        reader.feed(chunk)
    answer = reader.next_answer()
    if answer is NEED_DATA and eof:
        reader.feed_eof()
        answer = reader.next_answer()
    return answer


@pytest.mark.parametrize("line", [v for v in VECTORS if b"\n" not in v], ids=repr)
def test_reader_whole_bytewise_and_with_trailing_data(line: bytes) -> None:
    wire = line + b"\r\n"
    expected = VECTORS[line]
    assert read([wire], eof=False) == expected
    assert read([bytes([b]) for b in wire], eof=False) == expected
    assert read([wire + b"40312 , 1080 : USERID : UNIX : second\r\n" + b"z" * 5000],
                eof=False) == expected


def test_reader_needs_data_until_the_line_ends() -> None:
    wire = b"40312 , 1080 : USERID : UNIX : alice\r\n"
    reader = ReplyReader(CPORT, SPORT)
    for i in range(len(wire) - 1):
        reader.feed(wire[i:i + 1])
        assert reader.next_answer() is NEED_DATA, i
    reader.feed(b"\n")
    assert reader.next_answer() == user("alice")


def test_reader_bound_counts_the_line_with_its_crlf() -> None:
    head = b"40312 , 1080 : USERID : UNIX : "
    fits = head + b"u" * (MAX_REPLY - len(head) - 2) + b"\r\n"
    assert len(fits) == MAX_REPLY
    assert read([fits], eof=False) == user("u" * (MAX_REPLY - len(head) - 2))
    over = head + b"u" * (MAX_REPLY - len(head) - 1) + b"\r\n"
    assert read([over], eof=False) == no("too long")
    assert read([bytes([b]) for b in over], eof=False) == no("too long")


def test_reader_endless_line_is_too_long_without_the_end_of_stream() -> None:
    reader = ReplyReader(CPORT, SPORT)
    for _ in range(10_000):                 # 10 MB fed, memory stays bounded
        reader.feed(b"A" * 1000)
        if reader.next_answer() is not NEED_DATA:
            break
    assert reader.next_answer() == no("too long")
    assert len(reader._buffer) <= MAX_REPLY + 1


def test_reader_very_long_user_name_is_too_long() -> None:
    wire = b"40312 , 1080 : USERID : UNIX : " + b"n" * 2000 + b"\r\n"
    assert read([wire]) == no("too long")


@pytest.mark.parametrize("sent, expected", [
    (b"", no("closed early")),
    (b"40312 , 10", no("closed early")),
    (b"40312 , 1080 : USERID : UNIX", no("closed early")),
    (b"garbage without an end", no("closed early")),
    (b"1080 , 40312 : USERID : UNIX : swapped", no("closed early")),
    # a whole reply whose identd closed instead of ending the line
    (b"40312 , 1080 : USERID : UNIX : alice", user("alice")),
    (b"40312 , 1080 : USERID : UNIX : alice\r", user("alice")),
    (b"40312 , 1080 : ERROR : NO-USER", no("ERROR : NO-USER")),
])
def test_reader_at_end_of_stream(sent: bytes, expected: IdentAnswer) -> None:
    assert read([sent]) == expected
    assert read([bytes([b]) for b in sent]) == expected


def test_query_line_is_client_port_then_ours() -> None:
    assert query_line(CPORT, SPORT) == b"40312 , 1080\r\n"
    assert query_line(1, 65535) == b"1 , 65535\r\n"


def test_answer_kinds() -> None:
    assert user("alice").answered and user("alice").kind is AnswerKind.USER
    assert user("alice").reason == ""
    answer = no("timed out")
    assert not answer.answered and answer.kind is AnswerKind.NO_ANSWER and answer.user is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1200), st.integers(0, 65535), st.integers(0, 65535))
def test_parse_reply_never_raises(line: bytes, client_port: int, server_port: int) -> None:
    answer = parse_reply(line, client_port, server_port)
    assert isinstance(answer, IdentAnswer)
    assert answer.answered == (answer.user is not None)
    assert answer.reason.isascii() and answer.reason.isprintable()
    if answer.answered:
        assert answer.user and answer.user == answer.user.strip(" \t")
        assert "\n" not in answer.user


_USER_TEXT = st.binary(min_size=1, max_size=200).filter(
    lambda b: b"\n" not in b and b.strip(b" \t") and not b.endswith(b"\r"))


@settings(max_examples=300, deadline=None)
@given(_USER_TEXT, st.sampled_from([b":", b" : ", b"\t:  "]))
def test_any_user_id_bytes_are_the_answer(name: bytes, sep: bytes) -> None:
    line = b"40312 , 1080" + sep + b"USERID" + sep + b"UNIX" + sep + name + b"\r\n"
    assert parse_reply(line, CPORT, SPORT) == user(name.strip(b" \t").decode("latin-1"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=12))
def test_reader_always_ends_in_one_answer(chunks: list[bytes]) -> None:
    answer = read(chunks, eof=True)
    assert isinstance(answer, IdentAnswer)


def test_parser_imports_no_io_modules() -> None:
    tree = ast.parse(Path(identwire.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"socket", "select", "selectors", "asyncio", "os", "io", "ssl", "time"}
