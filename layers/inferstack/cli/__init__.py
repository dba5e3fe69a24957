"""The `inferstack` command line.

- `inferstack serve`: the Open Inference Protocol API on ONNX files (cli/serve.py);
- `inferstack validate | push | releases | status | promote | rollback`: the model
  lifecycle (cli/lifecycle.py, typer + rich);
- `inferstack drift baseline | check`: drift on a laptop (cli/drift.py).

`serve` is dispatched before typer is imported: the serving image runs it without the
lifecycle's dependencies.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        from inferstack.cli.serve import main as serve

        return serve(args[1:])
    from inferstack.cli.lifecycle import run

    return run(args)
