"""The ``robustsnn`` command. Each sub-command lives in its own module with ``register(app)``."""

from __future__ import annotations

import os
import sys

import typer

from ..errors import RobustSNNError

app = typer.Typer(
    name="robustsnn",
    help="Adversarially robust, sparse and energy-efficient spiking neural networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from . import convert, efficiency, evaluate, export, info, pipeline, prune, report, train  # noqa: E402

for _module in (train, info, evaluate, prune, convert, pipeline, efficiency, export, report):
    _module.register(app)


def main() -> None:
    """Entry point: run the app; expected errors become one line on stderr and exit code 2.

    Under torchrun only rank 0 prints an expected error (every rank exits with code 2),
    except a lost peer, which each surviving rank reports.
    """
    from .. import distributed as D

    try:
        app(standalone_mode=False)
        D.shutdown()
    except (RobustSNNError, ValueError, FileNotFoundError, KeyError) as e:
        if os.environ.get("ROBUSTSNN_DEBUG"):
            raise
        msg = e.args[0] if e.args else str(e)
        if os.environ.get("RANK", "0") == "0" or type(e).__name__ == "RankFailure":
            print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
