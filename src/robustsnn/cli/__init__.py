"""The ``robustsnn`` command. Each sub-command lives in its own module with ``register(app)``."""

from __future__ import annotations

import errno
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
    rich_markup_mode=None,
)

from . import convert, efficiency, evaluate, export, info, pipeline, prune, report, train  # noqa: E402

for _module in (train, info, evaluate, prune, convert, pipeline, efficiency, export, report):
    _module.register(app)


_OS_HINTS = {
    errno.ENOSPC: "free some space or write elsewhere (--out)",
    errno.EDQUOT: "free some space or write elsewhere (--out)",
    errno.EACCES: "check the permissions or write elsewhere (--out)",
    errno.EPERM: "check the permissions or write elsewhere (--out)",
    errno.EROFS: "the file system is read-only: write elsewhere (--out)",
    errno.ENOTDIR: "a path component is a file, not a directory: choose another path",
    errno.EISDIR: "expected a file but found a directory: give the file's path",
    errno.EEXIST: "a file stands where a directory is needed: choose another path",
    errno.ENOENT: "check the path",
}


def _message(e: BaseException) -> str:
    """The one line printed for an expected error: what is wrong and, for OS errors, what to do."""
    if isinstance(e, OSError) and e.errno is not None and not isinstance(e, RobustSNNError):
        where = f": {e.filename}" if e.filename else ""
        hint = _OS_HINTS.get(e.errno, "check the path and the disk")
        return f"{e.strerror or e}{where} ({hint})"
    msg = e.args[0] if e.args else str(e)
    return str(msg).splitlines()[0] if str(msg).strip() else type(e).__name__


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and always leave through ``sys.exit``.

    Usage errors (unknown option, missing or malformed argument) are printed by typer's own
    click, vendored or not, as the usual short usage message with exit code 2; expected
    errors of ours (bad values, unreadable files, a full disk) become one line
    ``error: ...`` on stderr and exit code 2. ``ROBUSTSNN_DEBUG=1`` shows the traceback.
    Under torchrun only rank 0 prints an expected error (every rank exits with code 2),
    except a lost peer, which each surviving rank reports.
    """
    from .. import distributed as D
    from ..allocator import tune_allocator, user_manages_allocator

    if not user_manages_allocator():
        tune_allocator()  # keep large freed blocks: no page faults per [T, B, ...] tensor (robustsnn.allocator)
    try:
        try:
            app(args=argv, prog_name="robustsnn", standalone_mode=True)
        except SystemExit as e:
            if not e.code:  # success: close the process group (a no-op for one process)
                D.shutdown()
            raise
    except (RobustSNNError, ValueError, OSError, KeyError) as e:
        if os.environ.get("ROBUSTSNN_DEBUG"):
            raise
        if os.environ.get("RANK", "0") == "0" or type(e).__name__ == "RankFailure":
            print(f"error: {_message(e)}", file=sys.stderr)
        sys.exit(2)
