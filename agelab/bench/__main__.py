"""``python -m agelab.bench <subcommand> [args]``.

Each subcommand is a module of this package with ``main(argv: list[str])``; add one by writing
the module and naming it in SUBCOMMANDS.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "faces": "agelab.bench.faces",  # the face pipeline on real photos: faces found, eye error, photos/s
    "infer": "agelab.bench.infer",  # CPU inference latency: PyTorch eager vs ONNX Runtime fp32 / int8
    "predict": "agelab.bench.predict",  # the whole predict path per photo on one core, stage by stage
    "prepare": "agelab.bench.prepare",  # faces prepared per second per core against decoding alone
    "train": "agelab.bench.train",  # training throughput: model-only ceiling vs the real data path
}


def usage() -> str:
    return ("usage: python -m agelab.bench <subcommand> [args]   (<subcommand> --help for its options)\n"
            "subcommands: " + ", ".join(sorted(SUBCOMMANDS)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"error: unknown subcommand {name!r}\n{usage()}", file=sys.stderr)
        return 2
    from agelab.cli import agelab_cause

    try:
        importlib.import_module(SUBCOMMANDS[name]).main(rest)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is one of ours
        cause = agelab_cause(exc)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)  # agelab errors: one line, exit code 2
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
