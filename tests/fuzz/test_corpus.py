"""The fuzz corpus replayed through every target (no fuzzer needed): what `make fuzz` once
found, and the seeds, stay good.  Also each target with a few thousand inputs made by
mutating its corpus, so that `make test` shakes every parser a little even without atheris."""

import random
from pathlib import Path

import pytest
from targets import TARGETS

CORPUS = Path(__file__).parent / "corpus"


def test_every_target_has_a_corpus_and_every_corpus_a_target():
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(TARGETS)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_corpus_replays(target):
    files = sorted((CORPUS / target).iterdir())
    assert files
    for path in files:
        TARGETS[target](path.read_bytes())


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(out) + 1)
        kind = rng.randrange(5)
        if kind == 0 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif kind == 1:
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        elif kind == 2:
            del out[at:at + rng.randint(1, 8)]
        elif kind == 3:
            out[at:at] = out[at:at + rng.randint(1, 32)]
        else:
            out[at:at] = rng.choice([b"\r\n", b"\n", b"\x00", b"\xff", b":", b"#", b" ", b"$"])
    return bytes(out)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_mutated_corpus(target):
    rng = random.Random(target)
    seeds = [p.read_bytes() for p in sorted((CORPUS / target).iterdir())]
    for _ in range(1500):
        data = rng.choice(seeds)
        for _ in range(rng.randint(1, 3)):
            data = mutate(rng, data)
        try:
            TARGETS[target](data)
        except Exception as exc:
            raise AssertionError(f"{target} on {data!r}") from exc
