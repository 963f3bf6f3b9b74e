"""The hand-off record (sockd.handoff): what a worker encodes is what a relay process decodes,
and a datagram that is not a record is refused, never half-read."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sockd.handoff import HandoffError, Tunnel, decode, encode

text = st.text(max_size=40)
tunnels = st.builds(
    Tunnel, session=text, story=text, client=text, dest=text, user=text, what=text,
    source=st.binary(max_size=16), started=st.floats(0, 1e9), wall_started=st.floats(0, 2e9),
    idle_timeout=st.floats(0.001, 1e6), worker_pid=st.integers(0, 1 << 31),
    worker_session=st.integers(0, 1 << 32), from_client=st.integers(0, 1 << 62),
    from_server=st.integers(0, 1 << 62), pending=st.binary(max_size=300))


@given(tunnels)
def test_a_record_survives_the_lane(tunnel):
    assert decode(encode(tunnel)) == tunnel


def test_each_field_keeps_its_place():
    tunnel = Tunnel(session="1.2", story="Connect from -(unknown)@127.0.0.2:5 to x", client="c",
                    dest="127.0.0.1:7", user="alice", what="connect 127.0.0.1:7 (echo)",
                    source=b"\x7f\x00\x00\x02", started=12.5, wall_started=1e9,
                    idle_timeout=7200.0, worker_pid=321, worker_session=9, from_client=3,
                    from_server=4, pending=b"\xff\x00ab")
    back = decode(encode(tunnel))
    assert back == tunnel
    assert (back.source, back.pending, back.user) == (b"\x7f\x00\x00\x02", b"\xff\x00ab", "alice")
    assert (back.worker_pid, back.worker_session, back.from_client) == (321, 9, 3)


@pytest.mark.parametrize("data", [
    b"", b"not json", b"{}", b"[]", b'"a string"', b"[1, 2, 3]",
    json.dumps(["s"] * 14).encode(),                      # one field short
    json.dumps(["s"] * 16).encode(),                      # one too many
    json.dumps(["s"] * 6 + ["zz"] + [1.0] * 3 + [0] * 4 + [""]).encode(),   # source not hex
    json.dumps(["s"] * 6 + ["00"] + [1.0] * 3 + [0] * 4 + ["\u0100"]).encode(),  # not Latin-1
    json.dumps(["s"] * 6 + [7] + [1.0] * 3 + [0] * 4 + [""]).encode(),      # source not text
    json.dumps(["s"] * 6 + ["00"] + [1.0] * 3 + [1.5, 0, 0, 0, ""]).encode(),  # pid not whole
    json.dumps(["s"] * 6 + ["00"] + [1.0] * 3 + [0, 0, "3", 0, ""]).encode(),  # count as text
])
def test_anything_else_is_a_broken_record(data):
    with pytest.raises(HandoffError, match="a broken record"):
        decode(data)
