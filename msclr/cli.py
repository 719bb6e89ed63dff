"""The ``msclr`` command line: thin wrappers that parse options and call one library function.

Library errors (:class:`msclr.errors.MsclrError`) become one-line messages and exit status 1;
usage errors exit 2 (click's convention); Ctrl-C exits 130 after the library has saved its
state.  Heavy imports (torch, TensorFlow, h5py) happen inside the commands, so ``msclr --help``
is instant.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from msclr import __version__
from msclr.errors import MsclrError

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
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

    return wrapper  # type: ignore[return-value]


def not_built(feature: str) -> None:
    """Exit non-zero for a command that this version does not implement yet."""
    raise click.ClickException(f"`msclr {feature}` is not built yet in msclr {__version__}.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="msclr")
def cli() -> None:
    """msclr: videos of people -> 3D skeletons -> action labels, with MS-CLR.

    \b
    Typical use:
      msclr demo                                   # 3-minute synthetic tour, CPU, no downloads
      msclr extract videos/ --out cache/           # MeTRAbs skeletons into an HDF5 cache
      msclr train cache/ --out run/                # MS-AimCLR pretraining + linear evaluation
      msclr evaluate run/                          # accuracy table
      msclr predict clip.mp4 --model run/          # named actions for a new clip

    Run `msclr COMMAND --help` for each command's options.
    """


# ------------------------------------------------------------------ skeletons
@cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the definition as JSON.")
@user_errors
def skeletons(name: str | None, as_json: bool) -> None:
    """List skeleton conventions, or show one in full.

    NAME is a built-in convention (see the list) or the path of a .toml / .json file that
    defines your own; the file is validated (flip is an involution and an automorphism,
    the graph is a tree rooted at the centre, isolated joints are declared).
    """
    from rich.console import Console
    from rich.table import Table

    from msclr.skeletons import SKELETONS, get_skeleton

    console = Console()
    if name is None:
        if as_json:
            click.echo(json.dumps({n: s.num_joints for n, s in SKELETONS.items()}, indent=2))
            return
        table = Table(title="Skeleton conventions (msclr skeletons NAME for details)")
        table.add_column("name", style="bold")
        table.add_column("joints", justify="right")
        table.add_column("edges", justify="right")
        table.add_column("centre")
        table.add_column("description")
        for skel in SKELETONS.values():
            table.add_row(skel.name, str(skel.num_joints), str(len(skel.edges)),
                          skel.joints[skel.centre], skel.description)
        console.print(table)
        return
    skel = get_skeleton(name)
    if as_json:
        click.echo(json.dumps(skel.to_dict(), indent=2))
        return
    console.print(f"[bold]{skel.name}[/bold]: {skel.description}")
    console.print(f"source: {skel.source}")
    console.print(f"centre: {skel.centre} {skel.joints[skel.centre]}")
    table = Table()
    for col in ("#", "joint", "parent (bone)", "flip"):
        table.add_column(col)
    for v, joint in enumerate(skel.joints):
        parent = skel.parents[v]
        bone = "-" if parent == v else f"{parent} {skel.joints[parent]}"
        if v in skel.isolated:
            bone = "(isolated)"
        flip = skel.flip[v]
        table.add_row(str(v), joint, bone, "-" if flip == v else f"{flip} {skel.joints[flip]}")
    console.print(table)
    console.print("edges: " + " ".join(f"({a},{b})" for a, b in skel.edges))
    pairs = sorted({tuple(sorted((v, w))) for v, w in enumerate(skel.flip) if v != w})
    console.print("flip pairs: " + " ".join(f"({a},{b})" for a, b in pairs))


# ---------------------------------------------------------------- not yet built
@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def extract() -> None:
    """Extract 3D skeletons from videos into an HDF5 cache (MeTRAbs or MediaPipe)."""
    not_built("extract")


@cli.group(name="import")
def import_() -> None:
    """Import existing skeleton datasets (NTU .skeleton files, pyskl pickles) into a cache."""


@import_.command(name="ntu", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def import_ntu() -> None:
    """Import NTU RGB+D .skeleton files."""
    not_built("import ntu")


@import_.command(name="pyskl", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def import_pyskl() -> None:
    """Import a pyskl / mmaction2 3D annotation pickle."""
    not_built("import pyskl")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def export() -> None:
    """Export one skeleton convention of a cache as a pyskl / mmaction2 annotation pickle."""
    not_built("export")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def info() -> None:
    """Summarise a cache: clips, conventions, frames, classes, splits, persons, extractor."""
    not_built("info")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def train() -> None:
    """MS-AimCLR pretraining, then frozen-encoder linear evaluation, ensemble and stream fusion."""
    not_built("train")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def evaluate() -> None:
    """Print the accuracy table of a training run."""
    not_built("evaluate")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def predict() -> None:
    """Recognise the actions in a new clip with a trained run."""
    not_built("predict")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def demo() -> None:
    """Synthetic end-to-end tour on CPU (no downloads, no data)."""
    not_built("demo")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="msclr")


if __name__ == "__main__":
    main()
