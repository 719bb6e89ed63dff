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
  msclr train cache/ --out run/ --config cpu_small --split xsub   # small CPU recipe (MS-AimCLR)
  msclr train cache/ --out run/ --config small_data --split xsub  # a few hundred clips: no collapse
  msclr train ntu60/ --out run/ --config ntu60_xsub --stream all --device cuda
  msclr train cache/ --out run/ --skeletons ntu_kinect_25,my_skeleton.toml --epochs 30 --linear-epochs 20
  msclr train cache/ --out run/ --protocol linear,finetune,semi:0.1,scratch   # more evaluation protocols
  msclr train other_cache/ --out run2/ --init run/           # no pretraining: start from run/'s encoders
  msclr train cache/ --out run/ --resume                     # continue after Ctrl-C / a crash
  torchrun --nproc-per-node 4 -m msclr train cache/ --out run/ --device cuda   # multi-GPU (DDP)

\b
Recipes (--config NAME): ntu60_xsub, ntu60_xview, ntu120_xsub, ntu120_xset, cpu_small, small_data, demo, or a
.toml file (sections [data] [model] [pretrain] [linear] [finetune] [evaluation] [fusion]; RUN/config.toml
of a run is one).  Precedence: defaults (paper) < recipe < options.  --epochs stretches the schedule: the lr
step (250/300) and the start of neighbour mining (151/300) keep their fractions.

\b
Conventions: --skeletons, else the recipe's pair (kinectv2_25,smplx_42); when the cache lacks it, every
convention of the cache (said in one line).  One convention = plain AimCLR (no cross-skeleton pairs, no
ensemble).  Only clips holding every convention are used.  Split: --split, else the cache's only pair,
else an automatic stratified 80/20 split (seeded, recorded in RUN/split/).

\b
Protocols (--protocol, comma-separated): linear = frozen encoder + linear classifiers (the paper's, default);
finetune = encoder + heads trained with all labels; semi:P = the same on a class-balanced fraction P of the
labels (semi:0.01, semi:0.1); scratch = the same network from random weights (scratch:P on a fraction P).  Each gives per-convention
scores, the skeleton ensemble and the 3-stream fusion; `msclr predict` uses finetune when present.

\b
RUN/ receives run.json, config.toml, model.pt (every protocol's network, for `msclr predict`), metrics.json,
report/ (confusion matrices), test_scores.npz, checkpoints, tensorboard/.  Accuracy is the LAST epoch on the
test split (no test-set model selection).

\b
Exit status: 0 ok; 1 a problem with the cache, the run folder or a recipe's content; 2 usage error (an
unknown recipe, protocol or stream, an unreadable skeleton file); 130 interrupted (add --resume to continue).""")
@click.argument("cache", type=click.Path(exists=True))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Run folder to create (or resume).")
@click.option("--config", "recipe", default=None, metavar="RECIPE|FILE.toml", help="Packaged recipe name or TOML file.")
@click.option("--skeletons", default=None, metavar="A,B", help="Conventions of the cache to train on: names or "
              "skeleton files [default: kinectv2_25,smplx_42, else the cache's; the paper: ntu_kinect_25,smplx_42].")
@click.option("--stream", default=None, metavar="joint|motion|bone|all",
              help="Input stream(s); 'all' trains three models and adds 3-stream fusion [default: joint].")
@click.option("--split", default=None, metavar="NAME",
              help="Split family: 'xsub' uses the cache's xsub_train / xsub_val [default: the only pair, else an "
                   "automatic stratified 80/20 split].")
@click.option("--protocol", "protocols", default=None, metavar="P,Q",
              help="Evaluation protocols: linear, finetune, semi:P, scratch [default: linear].")
@click.option("--init", default=None, type=click.Path(exists=True, file_okay=False), metavar="RUN",
              help="Skip pretraining: start from the pretrained encoders of a finished run (same conventions).")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Pretraining epochs [300].")
@click.option("--batch-size", type=click.IntRange(2), default=None, help="Pretraining batch (global over GPUs) [128].")
@click.option("--linear-epochs", type=click.IntRange(1), default=None, help="Linear-evaluation epochs [100].")
@click.option("--finetune-epochs", type=click.IntRange(1), default=None,
              help="Epochs of the finetune / semi / scratch protocols [100].")
@click.option("--device", default=None, metavar="cpu|cuda|cuda:N", help="[default: cuda if available, else cpu]")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads for torch [default: the idle cores, from the load average].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--seed", type=int, default=None, help="Random seed [0].")
@click.option("--workers", type=click.IntRange(0), default=None, help="DataLoader worker processes [recipe].")
@click.option("--no-tensorboard", is_flag=True, help="Do not write TensorBoard logs.")
@click.option("--quiet", "-q", is_flag=True, help="Only the progress bar and the final table.")
@click.pass_context
@user_errors
def train(ctx: click.Context, cache: str, out: str, recipe: str | None, skeletons: str | None, stream: str | None,
          split: str | None, protocols: str | None, init: str | None, epochs: int | None, batch_size: int | None,
          linear_epochs: int | None, finetune_epochs: int | None, device: str | None, threads: int | None,
          resume: bool, seed: int | None, workers: int | None, no_tensorboard: bool, quiet: bool) -> None:
    """MS-AimCLR pretraining, then evaluation (frozen-encoder linear evaluation by default), skeleton ensemble
    and stream fusion.

    CACHE is an msclr cache folder (msclr extract / msclr import); the run is written to --out.
    """
    from msclr.console import TrainProgress, console, note, print_protocol_metrics
    from msclr.pipeline.config import OptionError, resolve_config
    from msclr.pipeline.train import ResumableRunError, resume_command, train_run

    try:
        config, notes = resolve_config(recipe, skeletons=skeletons, stream=stream, split=split, epochs=epochs,
                                       batch_size=batch_size, seed=seed, linear_epochs=linear_epochs,
                                       workers=workers, protocols=protocols, finetune_epochs=finetune_epochs,
                                       init=init)
    except OptionError as err:
        raise click.UsageError(str(err), ctx) from None
    device = default_device(device)
    err = console(stderr=True)
    text, previous = _set_threads(threads, device)
    for line in (*notes, text):
        note(line, out=err)
    rerun = resume_command(_command_line(ctx))
    try:
        with TrainProgress(err, quiet=quiet) as progress:
            metrics = train_run(cache, out, config, device=device, resume=resume, progress=progress,
                                tensorboard=not no_tensorboard, cache_conventions=skeletons is None)
    except ResumableRunError as error:
        raise click.ClickException(f"{error} Rerun: {rerun}") from None
    except KeyboardInterrupt:
        click.echo(f"Interrupted: the run in {out} is saved (status interrupted); add --resume to continue it:\n"
                   f"  {rerun}", err=True)
        sys.exit(130)
    finally:
        _restore_threads(previous)
    if metrics:
        print_protocol_metrics(metrics)


def _set_threads(threads: int | None, device: str) -> tuple[str, int]:
    """Set torch's intra-op threads (``--threads``, else the idle cores) and the CPU allocator; returns a note
    and the previous thread count."""
    import torch

    from msclr.pipeline.training.cpu_tuning import pick_threads, tune_malloc

    if device == "cpu":
        tune_malloc()  # glibc allocator settings for CPU training
    previous = torch.get_num_threads()
    count, reason = pick_threads(threads)
    torch.set_num_threads(count)
    hint = "" if threads is not None else "; --threads N to choose"
    return f"{count} CPU thread{'s' if count > 1 else ''} ({reason}{hint})", previous


def _restore_threads(count: int) -> None:
    """Give the process its thread count back (the command may run inside another program, e.g. a test)."""
    import torch

    torch.set_num_threads(count)


def _command_line(ctx: click.Context) -> list[str]:
    """``msclr COMMAND`` with the arguments and options given on the command line (for "rerun with ...")."""
    from click.core import ParameterSource

    args: list[str] = ["msclr", ctx.info_name or "train"]
    options: list[str] = []
    for param in ctx.command.params:
        if param.name is None or ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if isinstance(param, click.Argument):
            args.append(str(value))
            continue
        flag = max(param.opts, key=len)
        if isinstance(param, click.Option) and param.is_flag:
            options += [flag] if value else []
        else:
            options += [flag, str(value)]
    return args + options


@cli.command(epilog="""\b
Examples:
  msclr evaluate run/            # table: per protocol, stream, skeleton; skeleton ensemble, 3-stream fusion
  msclr evaluate run/ --json     # metrics.json (also per-class accuracy)""")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json instead of the table.")
@user_errors
def evaluate(run: str, as_json: bool) -> None:
    """Print the accuracy table of a training run (top-1 / top-5, last epoch, test split; one row group per
    evaluation protocol)."""
    from msclr.pipeline.rundir import read_metrics

    metrics = read_metrics(run)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        from msclr.console import print_protocol_metrics

        print_protocol_metrics(metrics)


@cli.command(epilog="""\b
Examples:
  msclr predict clip.mp4 --model run/                          # MeTRAbs (downloads its model once)
  msclr predict clip.mp4 --model run/ --extractor mediapipe    # a run trained on blazepose_33
  msclr predict clip.mp4 --model run/ --json --render out.mp4  # JSON + the clip with skeletons and label
  msclr predict --model run/ --from-cache cache/ --clip S001C001P001R001A001   # stored skeletons, no video
  msclr predict --model run/ --from-pyskl utd.pkl --clip a10_s1_t1 --protocol linear

Extractors produce: """ + describe_outputs({"metrabs": "a run trained on NTU's ntu_kinect_25 is fed kinectv2_25, "
                                            "same joint order; see the left/right caveat in the docs"}) + """.
A run on conventions no extractor produces (kinect_v1_20, a user-defined skeleton) predicts from stored
skeletons: --from-cache or --from-pyskl.  The model: the run's fine-tuned one when it has one, else linear
evaluation's (--protocol to choose); the output names it.
Exit status: 0 ok; 1 missing/unfinished run, unsafe model.pt, a convention the extractor cannot
produce, an undecodable clip, an unknown clip name or nobody in it; 2 usage error.""")
@click.argument("clip", required=False, type=click.Path(dir_okay=False))
@click.option("--model", "-m", "run", required=True, type=click.Path(),
              help="Run folder written by `msclr train` (run.json + model.pt); may be copied anywhere.")
@click.option("--from-cache", type=click.Path(exists=True, file_okay=False), default=None, metavar="CACHE",
              help="Classify the skeletons of a cache clip (--clip NAME) instead of a video.")
@click.option("--from-pyskl", type=click.Path(exists=True, dir_okay=False), default=None, metavar="FILE.pkl",
              help="Classify a sample (--clip NAME = its frame_dir) of a pyskl annotation pickle.")
@click.option("--clip", "clip_name", default=None, metavar="NAME", help="The clip of --from-cache / --from-pyskl.")
@click.option("--skeleton", default=None, metavar="NAME|FILE",
              help="Convention of the --from-pyskl keypoints [default: the run's convention they fit].")
@click.option("--protocol", default=None, metavar="P",
              help="The run's model: finetune, linear, semi:P, scratch [default: finetune if present, else linear].")
@click.option("--extractor", type=click.Choice(list(EXTRACTOR_KINDS)), default=DEFAULT_EXTRACTOR, show_default=True,
              help="Pose backend; it must produce the conventions the run was trained on.")
@click.option("--pose-model", default=None, metavar="URL|DIR",
              help="MeTRAbs SavedModel URL or unpacked directory (default: msclr extract's).")
@click.option("--top-k", type=click.IntRange(1), default=5, show_default=True, help="Classes to show.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (top-k class, label, probability; protocol, conventions, streams, extractor, frames).")
@click.option("--render", type=click.Path(dir_okay=False), default=None, metavar="OUT.mp4",
              help="Also write the clip with the skeleton(s) and the top label drawn (.mp4 mp4v or .avi MJPG).")
@click.option("--device", default=None, metavar="cpu|cuda", help="[default: cuda if available, else cpu]")
@click.pass_context
@user_errors
def predict(ctx: click.Context, clip: str | None, run: str, from_cache: str | None, from_pyskl: str | None,
            clip_name: str | None, skeleton: str | None, protocol: str | None, extractor: str,
            pose_model: str | None, top_k: int, as_json: bool, render: str | None, device: str | None) -> None:
    """Recognise the action in CLIP (a video), or in a stored clip (--from-cache / --from-pyskl), with a
    trained run.

    Extracts every skeleton convention the run needs in one pass (or reads them), preprocesses them as in
    training, runs each stream's encoder and per-convention classifiers, then the skeleton ensemble and
    stream fusion, and prints the top-k classes with probabilities.
    """
    from msclr.console import ExtractBars, print_prediction_protocol
    from msclr.pipeline.predict import predict_stored, predict_video

    stored = _check_predict_usage(ctx, clip)
    device = default_device(device)
    if stored:
        prediction = predict_stored(run, str(clip_name), cache=from_cache, pyskl=from_pyskl, skeleton=skeleton,
                                    top_k=top_k, device=device, protocol=protocol)
    else:
        with ExtractBars(single=True) as progress:
            prediction = predict_video(str(clip), run, extractor=extractor, pose_model=pose_model, top_k=top_k,
                                       device=device, render=render, progress=progress, verbose=verbose_requested(),
                                       protocol=protocol)
    if as_json:
        click.echo(json.dumps(prediction.to_dict(), indent=2))
    else:
        print_prediction_protocol(prediction)


def _check_predict_usage(ctx: click.Context, clip: str | None) -> bool:
    """Refuse option combinations that cannot work (usage errors, exit 2); True when predicting from stored
    skeletons."""
    from click.core import ParameterSource

    from msclr.pipeline.config import OptionError, parse_protocol

    p = ctx.params
    stored = [f for f in ("from_cache", "from_pyskl") if p[f] is not None]
    given = [n for n in ("extractor", "pose_model", "render") if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE]
    problem = None
    if len(stored) > 1:
        problem = "give either --from-cache or --from-pyskl, not both"
    elif stored and clip is not None:
        problem = f"give either a video CLIP ({clip}) or --{stored[0].replace('_', '-')}, not both"
    elif stored and p["clip_name"] is None:
        problem = f"--{stored[0].replace('_', '-')} needs --clip NAME (the clip to classify)"
    elif stored and given:
        problem = f"--{given[0].replace('_', '-')} applies to a video CLIP only, not to stored skeletons"
    elif not stored and clip is None:
        problem = "give a video CLIP, or --from-cache CACHE / --from-pyskl FILE with --clip NAME"
    elif not stored and p["clip_name"] is not None:
        problem = "--clip names a stored clip: use it with --from-cache or --from-pyskl (a video is the CLIP argument)"
    elif p["skeleton"] is not None and not p["from_pyskl"]:
        problem = "--skeleton applies to --from-pyskl only"
    if problem is None and p["protocol"] is not None:
        try:
            parse_protocol(p["protocol"])
        except OptionError as err:
            problem = str(err)
    if problem:
        raise click.UsageError(problem, ctx)
    return bool(stored)


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
    """Synthetic end-to-end tour on CPU: no downloads, no data, under a minute (18-26 s measured).

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
