"""Helpers of the tests that train tiny runs through `msclr train`: the tiny recipe (test_train_cli's, with a
short fine-tuning schedule), a synthetic cache, and the command itself (CPU, one thread)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from test_train_cli import TINY_RECIPE as _TRAIN_CLI_RECIPE

from msclr.cli import cli

TINY_RECIPE = _TRAIN_CLI_RECIPE.replace("length = 24", "length = 16") + """[finetune]
epochs = 2
batch_size = 8
lr = 0.05
"""
"""kinectv2_25 + smpl_24, 16 frames, a 4-channel encoder, fine-tuning 2 epochs."""


def recipe_for(*conventions: str) -> str:
    """:data:`TINY_RECIPE` on other conventions."""
    names = ", ".join(f'"{c}"' for c in conventions)
    return TINY_RECIPE.replace('skeletons = ["kinectv2_25", "smpl_24"]', f"skeletons = [{names}]")


def write_cache(root: Path, conventions: tuple[str, ...], *, splits: bool = True, per_class: int = 8) -> Path:
    """A synthetic cache written through CacheWriter (4 subjects; xsub splits unless ``splits`` is False)."""
    from msclr.pipeline.cache import CacheWriter, Clip
    from msclr.pipeline.datasets.synthetic import ACTIONS, make_dataset, subject_splits

    samples = make_dataset(list(conventions), samples_per_class=per_class, subjects=4, seed=0)
    with CacheWriter(root, list(conventions), max_persons=1, classes=list(ACTIONS)) as writer:
        for s in samples:
            writer.add(Clip(s.name, poses=s.poses, label=s.label, subject=s.subject, extractor="synthetic"))
        if splits:
            writer.set_splits(subject_splits(samples))
    return root


def train(cache: Path, out: Path, recipe: Path, *extra: str):
    """``msclr train CACHE --out OUT --config RECIPE`` (2 pretraining and 5 linear epochs, CPU) + ``extra``."""
    return CliRunner().invoke(cli, ["train", str(cache), "--out", str(out), "--config", str(recipe), "--epochs", "2",
                                    "--linear-epochs", "5", "--device", "cpu", "--no-tensorboard", "-q", "--threads",
                                    "1", *extra])


def recipe_file(folder: Path, text: str = TINY_RECIPE) -> Path:
    """``text`` written to ``folder/tiny.toml``."""
    path = folder / "tiny.toml"
    path.write_text(text)
    return path
