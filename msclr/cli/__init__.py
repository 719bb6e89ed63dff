"""The ``msclr`` command line: thin wrappers that parse options and call one library function.

The group, its shared helpers and the entry point live here; the commands live beside it, by what they work
on: :mod:`msclr.cli.cache_commands` (skeletons, extract, import, export, compact, info) and
:mod:`msclr.cli.run_commands` (train, evaluate, predict, demo).

Library errors (:class:`msclr.errors.MsclrError`) become one-line messages and exit status 1;
usage errors exit 2 (click's convention); Ctrl-C exits 130 after the library has saved its
state.  Heavy imports (torch, TensorFlow, h5py) happen inside the commands, so ``msclr --help``
is instant.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from msclr import __version__
from msclr.errors import MsclrError


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn :class:`MsclrError` into a clean ``Error: ...`` line and KeyboardInterrupt into exit 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MsclrError as err:
            raise click.ClickException(str(err)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted: progress so far is saved; rerun the same command to resume.", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="msclr")
@click.option("--verbose", "-v", is_flag=True, help="Also show TensorFlow's own log lines (MeTRAbs).")
def cli(verbose: bool) -> None:
    """msclr: videos of people -> 3D skeletons -> action labels, with MS-CLR.

    \b
    Typical use:
      msclr demo                                   # 1-minute synthetic tour, CPU, no downloads
      msclr extract videos/ --out cache/           # MeTRAbs skeletons into an HDF5 cache
      msclr train cache/ --out run/                # MS-AimCLR pretraining + linear evaluation
      msclr evaluate run/                          # accuracy table
      msclr predict clip.mp4 --model run/          # named actions for a new clip

    Run `msclr COMMAND --help` for each command's options.
    """


def default_device(device: str | None) -> str:
    """``--device`` as given, else ``cuda`` when a GPU is visible, else ``cpu``."""
    if device is not None:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def verbose_requested() -> bool:
    """``msclr -v``: TensorFlow's own logging is shown (it is silenced by default)."""
    return bool(click.get_current_context().find_root().params.get("verbose"))


# The commands register themselves on ``cli`` when imported.
from msclr.cli import cache_commands, run_commands  # noqa: E402, F401


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="msclr")


if __name__ == "__main__":
    main()
