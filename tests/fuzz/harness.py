"""One fuzz target under atheris (libFuzzer): `python tests/fuzz/harness.py TARGET [libFuzzer
options] CORPUS_DIR...`.  scripts/fuzz.py (`make fuzz`) runs every target with a time box.

sockd and clients are instrumented for coverage; the target functions are in targets.py.
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["sockd", "clients"]):
    from targets import TARGETS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: harness.py TARGET [libFuzzer options]; targets: {' '.join(TARGETS)}")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
