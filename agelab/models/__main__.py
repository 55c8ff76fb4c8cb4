"""``python -m agelab.models --summary [--markdown] [names...]``: the model zoo table."""

from __future__ import annotations

import argparse
import sys

from agelab.models import MODELS
from agelab.models.summary import markdown_table, rich_table, summary_rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agelab.models", description=__doc__)
    parser.add_argument("--summary", action="store_true", help="parameters and FLOPs of every registered model")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table instead of a rich one")
    parser.add_argument("names", nargs="*", help=f"models to include (default: all of {', '.join(sorted(MODELS))})")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        print(f"error: unknown model(s) {', '.join(unknown)}; known: {', '.join(sorted(MODELS))}", file=sys.stderr)
        return 2
    if not args.summary:
        print("\n".join(sorted(MODELS)))
        return 0
    rows = summary_rows(args.names or None)
    if args.markdown:
        print(markdown_table(rows))
    else:
        from rich.console import Console

        Console(width=200).print(rich_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
