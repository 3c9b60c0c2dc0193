"""The `i2vgen` command: one module per command (generate, refine, convert, demo, eval, eval-shapes, train, serve).

Every failure the user can cause ends in one line on stderr (`i2vgen: error: ...`) and a non-zero exit, with nothing
partially written and nothing replaced that the user did not name with --overwrite. The commands call the
application layer (`i2vgen.app`); building the parser imports no torch (`i2vgen --help` stays fast).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from i2vgen.errors import I2VGenError


def build_parser() -> argparse.ArgumentParser:
    from i2vgen import __version__
    from i2vgen.cli.convert import add_convert
    from i2vgen.cli.demo import add_demo
    from i2vgen.cli.generate import add_generate
    from i2vgen.cli.refine import add_refine
    from i2vgen.cli.serve import add_serve
    from i2vgen.cli.train import add_train_commands
    from i2vgen.eval import add_eval_command
    from i2vgen.shapes_eval import add_eval_shapes_command

    parser = argparse.ArgumentParser(prog="i2vgen", description="I2VGen-XL: image-to-video diffusion, both stages.")
    parser.add_argument("--version", action="version", version=f"i2vgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_generate(sub)
    add_refine(sub)
    add_convert(sub)
    add_demo(sub)
    add_eval_command(sub)
    add_eval_shapes_command(sub)
    add_train_commands(sub)
    add_serve(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _warnings_to_stderr()
    try:
        return int(args.func(args) or 0)
    except I2VGenError as e:
        print(f"i2vgen: error: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("i2vgen: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    except MemoryError:
        print("i2vgen: error: out of memory; try fewer frames, a smaller size, --offload, --sequential-cfg or "
              "--dtype bf16 (`i2vgen COMMAND --help`)", file=sys.stderr)
        return 1


def _warnings_to_stderr() -> None:
    """The library's warnings (`logging.getLogger("i2vgen")`) as `i2vgen: warning: ...` lines, once."""
    log = logging.getLogger("i2vgen")
    if not any(getattr(h, "_i2vgen", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("i2vgen: warning: %(message)s"))
        handler._i2vgen = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.setLevel(logging.WARNING)


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
