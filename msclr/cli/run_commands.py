"""``msclr train | evaluate | predict | demo``: the commands that train, evaluate and use runs."""

from __future__ import annotations

import json
import sys

import click

from msclr.cli import cli, default_device, user_errors, verbose_requested
from msclr.extractors.registry import DEFAULT_EXTRACTOR, EXTRACTOR_KINDS, describe_outputs


@cli.command(epilog="""\b
Examples:
  msclr train cache/ --out run/                              # defaults = the paper's settings
  msclr train cache/ --out run/ --config cpu_small --split xsub   # small CPU recipe
  msclr train ntu60/ --out run/ --config ntu60_xsub --stream all --device cuda
  msclr train cache/ --out run/ --skeletons ntu_kinect_25,smplx_42 --epochs 30 --linear-epochs 20
  msclr train cache/ --out run/ --resume                     # continue after Ctrl-C / a crash
  torchrun --nproc-per-node 4 -m msclr train cache/ --out run/ --device cuda   # multi-GPU (DDP)

\b
Recipes (--config NAME): ntu60_xsub, ntu60_xview, ntu120_xsub, ntu120_xset, cpu_small, or a
.toml file (sections [data] [model] [pretrain] [linear] [fusion]; RUN/config.toml of a run is one).
Precedence: defaults (paper) < recipe < options.  --epochs stretches the schedule: the lr step
(250/300) and the start of neighbour mining (151/300) keep their fractions.

\b
RUN/ receives run.json, config.toml, model.pt (encoders + classifiers, for `msclr predict`),
metrics.json, report/ (confusion matrices), test_scores.npz, checkpoints, tensorboard/.
Accuracy is the LAST linear-evaluation epoch on the test split (no test-set model selection).""")
@click.argument("cache", type=click.Path(exists=True))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Run folder to create (or resume).")
@click.option("--config", "recipe", default=None, metavar="RECIPE|FILE.toml", help="Packaged recipe name or TOML file.")
@click.option("--skeletons", default=None, metavar="A,B", help="Conventions of the cache to train on "
              "[default: kinectv2_25,smplx_42; the paper: ntu_kinect_25,smplx_42].")
@click.option("--stream", default=None, metavar="joint|motion|bone|all",
              help="Input stream(s); 'all' trains three models and adds 3-stream fusion [default: joint].")
@click.option("--split", default=None, metavar="NAME",
              help="Split family: 'xsub' uses the cache's xsub_train / xsub_val [default: the only pair].")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Pretraining epochs [300].")
@click.option("--batch-size", type=click.IntRange(2), default=None, help="Pretraining batch (global over GPUs) [128].")
@click.option("--linear-epochs", type=click.IntRange(1), default=None, help="Linear-evaluation epochs [100].")
@click.option("--device", default=None, metavar="cpu|cuda|cuda:N", help="[default: cuda if available, else cpu]")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--seed", type=int, default=None, help="Random seed [0].")
@click.option("--workers", type=click.IntRange(0), default=None, help="DataLoader worker processes [recipe].")
@click.option("--no-tensorboard", is_flag=True, help="Do not write TensorBoard logs.")
@click.option("--quiet", "-q", is_flag=True, help="Only the progress bar and the final table.")
@user_errors
def train(cache: str, out: str, recipe: str | None, skeletons: str | None, stream: str | None, split: str | None,
          epochs: int | None, batch_size: int | None, linear_epochs: int | None, device: str | None,
          resume: bool, seed: int | None, workers: int | None, no_tensorboard: bool, quiet: bool) -> None:
    """MS-AimCLR pretraining, then frozen-encoder linear evaluation, ensemble and stream fusion.

    CACHE is an msclr cache folder (msclr extract / msclr import); the run is written to --out.
    """
    from msclr.console import TrainProgress, console, note, print_metrics
    from msclr.pipeline.config import resolve_config
    from msclr.pipeline.train import train_run
    from msclr.pipeline.training.cpu_tuning import tune_malloc

    config, notes = resolve_config(recipe, skeletons=skeletons, stream=stream, split=split, epochs=epochs,
                                   batch_size=batch_size, seed=seed, linear_epochs=linear_epochs, workers=workers)
    device = default_device(device)
    err = console(stderr=True)
    if device == "cpu":
        tune_malloc()  # glibc allocator settings for CPU training
    for text in notes:
        note(text, out=err)
    with TrainProgress(err, quiet=quiet) as progress:
        metrics = train_run(cache, out, config, device=device, resume=resume, progress=progress,
                            tensorboard=not no_tensorboard)
    if metrics:
        print_metrics(metrics)


@cli.command(epilog="""\b
Examples:
  msclr evaluate run/            # table: per stream, per skeleton, skeleton ensemble, 3-stream fusion
  msclr evaluate run/ --json     # metrics.json (also per-class accuracy)""")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json instead of the table.")
@user_errors
def evaluate(run: str, as_json: bool) -> None:
    """Print the accuracy table of a training run (top-1 / top-5, last epoch, test split)."""
    from msclr.pipeline.rundir import read_metrics

    metrics = read_metrics(run)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        from msclr.console import print_metrics

        print_metrics(metrics)


@cli.command(epilog="""\b
Examples:
  msclr predict clip.mp4 --model run/                          # MeTRAbs (downloads its model once)
  msclr predict clip.mp4 --model run/ --extractor mediapipe    # a run trained on blazepose_33
  msclr predict clip.mp4 --model run/ --json --render out.mp4  # JSON + the clip with skeletons and label

Extractors produce: """ + describe_outputs({"metrabs": "a run trained on NTU's ntu_kinect_25 is fed kinectv2_25, "
                                            "same joint order; see the left/right caveat in the docs"}) + """.
Exit status: 0 ok; 1 missing/unfinished run, unsafe model.pt, a convention the extractor cannot
produce, an undecodable clip or nobody in it; 2 usage error.""")
@click.argument("clip", type=click.Path(dir_okay=False))
@click.option("--model", "-m", "run", required=True, type=click.Path(),
              help="Run folder written by `msclr train` (run.json + model.pt); may be copied anywhere.")
@click.option("--extractor", type=click.Choice(list(EXTRACTOR_KINDS)), default=DEFAULT_EXTRACTOR, show_default=True,
              help="Pose backend; it must produce the conventions the run was trained on.")
@click.option("--pose-model", default=None, metavar="URL|DIR",
              help="MeTRAbs SavedModel URL or unpacked directory (default: msclr extract's).")
@click.option("--top-k", type=click.IntRange(1), default=5, show_default=True, help="Classes to show.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (top-k class, label, probability; conventions, streams, extractor, frames).")
@click.option("--render", type=click.Path(dir_okay=False), default=None, metavar="OUT.mp4",
              help="Also write the clip with the skeleton(s) and the top label drawn (.mp4 mp4v or .avi MJPG).")
@click.option("--device", default=None, metavar="cpu|cuda", help="[default: cuda if available, else cpu]")
@user_errors
def predict(clip: str, run: str, extractor: str, pose_model: str | None, top_k: int, as_json: bool,
            render: str | None, device: str | None) -> None:
    """Recognise the action in CLIP (a video) with a trained run.

    Extracts every skeleton convention the run needs in one pass, preprocesses them as in
    training, runs each stream's encoder and per-convention classifiers, then the skeleton
    ensemble and stream fusion, and prints the top-k classes with probabilities.
    """
    from msclr.console import ExtractBars, print_prediction
    from msclr.pipeline.predict import predict_video

    device = default_device(device)
    with ExtractBars(single=True) as progress:
        prediction = predict_video(clip, run, extractor=extractor, pose_model=pose_model, top_k=top_k,
                                   device=device, render=render, progress=progress, verbose=verbose_requested())
    if as_json:
        click.echo(json.dumps(prediction.to_dict(), indent=2))
    else:
        print_prediction(prediction)


@cli.command()
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None,
              help="Folder for the cache and the run (new or empty). Default: a new temporary folder, "
                   "printed at the end.")
@click.option("--device", default="cpu", show_default=True, metavar="cpu|cuda", help="Where to train.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the data, training and baseline.")
@click.option("--no-baseline", is_flag=True, help="Skip the random-init encoder baseline.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads for torch [default: the idle cores, from the load average].")
@user_errors
def demo(out: str | None, device: str, seed: int, no_baseline: bool, threads: int | None) -> None:
    """Synthetic end-to-end tour on CPU: no downloads, no data, under a minute (38 s measured).

    Generates a small SYNTHETIC action set (6 classes of procedural motions in ntu_kinect_25 + smpl_24),
    caches it, runs MS-AimCLR pretraining, linear evaluation and the skeleton ensemble through the code of
    `msclr train`, prints the accuracy table (with a random-init baseline) and predicts a held-out clip."""
    from msclr.console import TrainProgress, console, print_demo
    from msclr.pipeline.demo import run_demo
    from msclr.pipeline.training.cpu_tuning import tune_malloc

    err = console(stderr=True)
    if device == "cpu":
        tune_malloc()  # glibc allocator settings for CPU training
    err.print("[bold]msclr demo[/bold]: the data are SYNTHETIC (generated here, nothing is downloaded).")
    try:
        with TrainProgress(err, quiet=True) as progress:
            result = run_demo(out, device=device, seed=seed, progress=progress, baseline=not no_baseline,
                              threads=threads)
    except KeyboardInterrupt:
        click.echo("Interrupted: the demo stopped; run `msclr demo` again (a new folder) to start over.", err=True)
        sys.exit(130)
    print_demo(result)
