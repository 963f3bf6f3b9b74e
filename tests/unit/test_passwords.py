"""The password file: its scrypt hashes, every bad line's message, the table it loads into, and
the Authenticator with the file alone (PAM: tests/integration/test_pam.py)."""

import hmac
from pathlib import Path

import pytest

from sockd import auth, passwords
from sockd.passwords import PasswordError, ScryptHash

# From passlib's documentation (passlib.hash.scrypt): a hash made by another implementation.
PASSLIB_VECTOR = ("$scrypt$ln=8,r=8,p=1$WKs1xljLudd6z9kbY0wpJQ"
                  "$yCR4iDZYDKv+iEJj6yHY0lv/epnfB6f/w1EbXrsJOuQ")


def quick(password: bytes) -> str:
    """A cheap hash for tests (ln=4): the format is the same at any cost."""
    return str(ScryptHash.make(password, ln=4))


def table_of(text: str) -> passwords.PasswordTable:
    return passwords.parse(text, "pw")


def error_of(text: str) -> str:
    with pytest.raises(PasswordError) as info:
        passwords.parse(text, "pw")
    return str(info.value)


# -- hashes ---------------------------------------------------------------------------------------


def test_a_hash_made_by_passlib_verifies_and_reads_back_the_same():
    hashed = ScryptHash.parse(PASSLIB_VECTOR)
    assert (hashed.ln, hashed.r, hashed.p, len(hashed.salt), len(hashed.digest)) == \
        (8, 8, 1, 16, 32)
    assert hashed.matches(b"password")
    assert not hashed.matches(b"Password")
    assert str(hashed) == PASSLIB_VECTOR


def test_make_then_parse_round_trip_with_the_defaults():
    hashed = ScryptHash.make(b"s\xc3\xa9cret")
    text = str(hashed)
    assert text.startswith(f"$scrypt$ln={passwords.DEFAULT_LN},r=8,p=1$")
    assert "=" not in text.split("$", 3)[3]                 # base64 without padding
    again = ScryptHash.parse(text)
    assert again == hashed
    assert again.matches(b"s\xc3\xa9cret")
    assert not again.matches(b"s\xe9cret")                  # the same text in latin-1
    assert ScryptHash.make(b"x", ln=4).salt != ScryptHash.make(b"x", ln=4).salt


def test_parameters_above_openssls_default_memory_limit_work():
    # ln=15, r=8 needs 32 MiB, more than hashlib.scrypt's default maxmem allows
    hashed = ScryptHash.make(b"pw", ln=15)
    assert ScryptHash.parse(str(hashed)).matches(b"pw")


def test_the_repr_shows_no_salt_or_hash():
    assert repr(ScryptHash.parse(PASSLIB_VECTOR)) == "ScryptHash(ln=8, r=8, p=1)"


def test_the_comparison_is_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((type(a), type(b)))
        return real(a, b)

    monkeypatch.setattr(passwords.hmac, "compare_digest", spy)
    assert table_of(f"alice:{quick(b'pw')}\n").verify("alice", "wrong") is False
    assert calls == [(bytes, bytes)]


# -- the file -------------------------------------------------------------------------------------


def test_comments_blank_lines_and_crlf():
    text = f"# users\n\n   \n  # indented comment\nalice:{quick(b'a')}\r\nbob:{quick(b'b:c')}\n"
    table = table_of(text)
    assert table.users() == [b"alice", b"bob"]
    assert len(table) == 2 and "alice" in table and "carol" not in table
    assert table.verify("alice", "a") is True
    assert table.verify("bob", "b:c") is True
    assert table.verify("bob", "a") is False
    assert table.verify("carol", "a") is None
    assert repr(table) == "PasswordTable(2 users)"


def test_names_and_passwords_are_the_bytes_on_the_wire():
    # The file is UTF-8; curl and PySocks send UTF-8 bytes, which sockd.protocol hands over
    # decoded latin-1, one character a byte.
    table = table_of("jürgen:" + quick("grüße".encode()) + "\n")
    wire_user, wire_password = "jürgen".encode(), "grüße".encode()
    assert table.verify(wire_user, wire_password) is True
    assert table.verify(wire_user.decode("latin-1"), wire_password.decode("latin-1")) is True
    assert table.verify("jürgen".encode("latin-1"), wire_password) is None
    assert table.users() == [wire_user]


def test_invalid_utf_8_names_are_kept_as_their_bytes():
    text = b"\xe9t\xe9:".decode("utf-8", "surrogateescape") + quick(b"x") + "\n"
    assert table_of(text).verify(b"\xe9t\xe9", b"x") is True


PLAIN = ("pw:{line}: user '{user}': not a scrypt hash (a plain-text password?): convert the file "
         "with 'sockpasswd --file pw convert'")
EXPECTED = "expected $scrypt$ln=N,r=R,p=P$SALT$HASH"
SALT = "WKs1xljLudd6z9kbY0wpJQ"
DIGEST = "yCR4iDZYDKv+iEJj6yHY0lv/epnfB6f/w1EbXrsJOuQ"


@pytest.mark.parametrize("text, message", [
    ("alice\n", "pw:1: expected user:$scrypt$... (see sockpasswd(8))"),
    (":x\n", "pw:1: expected user:$scrypt$... (see sockpasswd(8))"),
    ("alice:\n", "pw:1: expected user:$scrypt$... (see sockpasswd(8))"),
    ("# ok\nalice:secret\n", PLAIN.format(line=2, user="alice")),
    ("bob:pa:ss\n", PLAIN.format(line=1, user="bob")),
    ("carol:$6$salt$hash\n", PLAIN.format(line=1, user="carol")),
    (f"a:{PASSLIB_VECTOR}\na:{PASSLIB_VECTOR}\n", "pw:2: user 'a' appears twice"),
    ("a:$scrypt$\n", f"pw:1: user 'a': malformed scrypt hash ({EXPECTED})"),
    (f"a:$scrypt$ln=8,r=8$${SALT}${DIGEST}\n",
     f"pw:1: user 'a': malformed scrypt hash ({EXPECTED})"),
    (f"a:$scrypt$ln=8,r=8,p=1${SALT}\n", f"pw:1: user 'a': malformed scrypt hash ({EXPECTED})"),
    (f"a:$scrypt$ln=8,r=8,p=1${SALT}${DIGEST}$\n",
     f"pw:1: user 'a': malformed scrypt hash ({EXPECTED})"),
    (f"a:$scrypt$N=8,r=8,p=1${SALT}${DIGEST}\n",
     f"pw:1: user 'a': malformed scrypt hash ({EXPECTED})"),
    (f"a:$scrypt$ln=18,r=8,p=1${SALT}${DIGEST}\n",
     "pw:1: user 'a': scrypt parameters out of bounds (ln 1-31, r at least 1, p 1-16, "
     "128*r*2**ln at most 128 MiB)"),
    (f"a:$scrypt$ln=8,r=8,p=17${SALT}${DIGEST}\n",
     "pw:1: user 'a': scrypt parameters out of bounds (ln 1-31, r at least 1, p 1-16, "
     "128*r*2**ln at most 128 MiB)"),
    (f"a:$scrypt$ln=0,r=8,p=1${SALT}${DIGEST}\n",
     "pw:1: user 'a': scrypt parameters out of bounds (ln 1-31, r at least 1, p 1-16, "
     "128*r*2**ln at most 128 MiB)"),
    (f"a:$scrypt$ln=8,r=8,p=1$not*base64${DIGEST}\n",
     "pw:1: user 'a': salt or hash is not base64"),
    (f"a:$scrypt$ln=8,r=8,p=1${SALT}$\n", "pw:1: user 'a': salt or hash is not base64"),
    (f"a:$scrypt$ln=8,r=8,p=1$AAAAAAAA${DIGEST}\n",
     "pw:1: user 'a': salt shorter than 8 bytes"),
    (f"a:$scrypt$ln=8,r=8,p=1${SALT}$AAAAAAAAAAAAAAAAAAAA\n",
     "pw:1: user 'a': hash not 16 to 64 bytes long"),
    (f"{'u' * 256}:{PASSLIB_VECTOR}\n", "pw:1: user name longer than 255 bytes"),
    (f"a\tb:{PASSLIB_VECTOR}\n", "pw:1: control character in user name"),
    (f"a\x7f:{PASSLIB_VECTOR}\n", "pw:1: control character in user name"),
    (f"a\u0085:{PASSLIB_VECTOR}\n", "pw:1: control character in user name"),
])
def test_bad_lines(text, message):
    assert error_of(text) == message


def test_no_message_quotes_a_password_or_a_hash():
    assert "s3cret" not in error_of("alice:s3cret\n")
    assert SALT not in error_of(f"a:$scrypt$ln=99,r=8,p=1${SALT}${DIGEST}\n")


def test_load_reads_the_file_and_names_it(tmp_path):
    path = tmp_path / "sockd.passwd"
    path.write_text(f"alice:{quick(b'pw')}\n")
    assert passwords.load(str(path)).verify(b"alice", b"pw") is True
    path.write_text("alice:pw\n")
    with pytest.raises(PasswordError) as info:
        passwords.load(str(path))
    assert str(info.value) == (f"{path}:1: user 'alice': not a scrypt hash (a plain-text "
                               f"password?): convert the file with 'sockpasswd --file {path} "
                               "convert'")
    with pytest.raises(PasswordError) as info:
        passwords.load(str(tmp_path / "missing"))
    assert str(info.value) == f"{tmp_path / 'missing'}: cannot read: No such file or directory"


@pytest.mark.parametrize("name, problem", [
    (b"", "empty user name"),
    (b"a:b", "':' in user name"),
    (b"a\nb", "control character in user name"),
    (b"a\x00", "control character in user name"),
    (b"\xc2\x9b", "control character in user name"),         # C1 CSI, as UTF-8
    (b"#x", "user name starts with '#'"),
    (b" #x", "user name starts with '#'"),
    (b"x" * 256, "user name longer than 255 bytes"),
    (b"x" * 255, None),
    (b"j\xc3\xbcrgen", None),
    (b"a b", None),
])
def test_user_name_problems(name, problem):
    assert passwords.user_name_problem(name) == problem


# -- the Authenticator with the file alone --------------------------------------------------------


def test_authenticator_with_the_file_only():
    table = table_of(f"alice:{quick(b'right')}\n")
    checker = auth.Authenticator(table, None)
    assert checker.configured
    assert checker.check("alice", "right") == auth.AuthResult(True, "password file")
    assert checker.check("alice", "wrong") == \
        auth.AuthResult(False, "wrong password (password file)")
    assert checker.check(b"bob", b"right") == auth.AuthResult(False, "no such user")
    assert not checker.check("bob", "right")


def test_authenticator_with_nothing_configured_denies():
    checker = auth.Authenticator(None, None)
    assert not checker.configured
    assert checker.check("alice", "x") == auth.AuthResult(False, "no such user")


def test_an_unknown_user_costs_one_scrypt_of_the_default_parameters():
    dummy = auth._DUMMY
    assert (dummy.ln, dummy.r, dummy.p) == \
        (passwords.DEFAULT_LN, passwords.DEFAULT_R, passwords.DEFAULT_P)


def test_sockpasswd_8_states_the_defaults():
    page = (Path(__file__).resolve().parents[2] / "man" / "sockpasswd.8").read_text("ascii")
    assert f"ln={passwords.DEFAULT_LN},r={passwords.DEFAULT_R},p={passwords.DEFAULT_P}" in page
    assert f"at most {passwords.MAX_MEMORY >> 20} MiB" in page
    assert f"up to {passwords.MAX_P}" in page
    assert passwords.DEFAULT_FILE in page
