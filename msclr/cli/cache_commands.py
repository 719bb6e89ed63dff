"""``msclr skeletons | extract | import | export | compact | info | split``: the commands that make and read skeleton
caches."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from msclr.cli import cli, user_errors, verbose_requested
from msclr.errors import MsclrError
from msclr.extractors.registry import DEFAULT_EXTRACTOR, EXTRACTOR_KINDS


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
    from msclr import console
    from msclr.skeletons import SKELETONS, get_skeleton

    skel = None if name is None else get_skeleton(name)
    if as_json:
        listing = {n: s.num_joints for n, s in SKELETONS.items()}
        click.echo(json.dumps(listing if skel is None else skel.to_dict(), indent=2))
    elif skel is None:
        console.print_skeleton_list(SKELETONS)
    else:
        console.print_skeleton(skel)


@cli.command(epilog="""\b
Exit status: 0 every selected video has a usable clip in the cache; 1 at least one video
could not be decoded, was empty, showed nobody or failed in the extractor (its status is
recorded in the cache; the other clips are kept; --retry-failed tries again), or an error
stopped the run; 2 usage error; 130 interrupted (finished clips are kept; rerun to resume).""")
@click.argument("videos", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Cache directory (created, or resumed: finished clips are skipped).")
@click.option("--extractor", type=click.Choice(list(EXTRACTOR_KINDS)), default=DEFAULT_EXTRACTOR, show_default=True,
              help="metrabs: MeTRAbs TF SavedModel, every convention from one pass (GPU advised). "
                   "mediapipe: BlazePose 33, one person, CPU (pip install 'msclr[mediapipe]').")
@click.option("--pose-model", default=None, metavar="URL|DIR",
              help="MeTRAbs SavedModel: a URL (downloaded once through tensorflow_hub, cached under "
                   "$TFHUB_CACHE_DIR) or an unpacked local directory. Default: the 28-dataset "
                   "EfficientNetV2-L model (metrabs_eff2l_y4_384px_800k_28ds, ~708 MB; non-commercial licence).")
@click.option("--skeletons", default=None, metavar="A,B,...",
              help="Conventions to store. Default: smpl_24,smplx_42,berkeley_mhad_43,kinectv2_25 (metrabs), "
                   "blazepose_33 (mediapipe).")
@click.option("--max-people", type=click.IntRange(1, 16), default=2, show_default=True,
              help="Person slots M per frame; people are tracked, the most salient tracks are kept.")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True,
              help="Frames per model call (MeTRAbs: 16-64 is fastest on a large GPU).")
@click.option("--fov", type=click.FloatRange(0, 180, min_open=True, max_open=True), default=None,
              help="Camera field of view in degrees along the larger image side (MeTRAbs' default 55; "
                   "NTU RGB+D's Kinect v2 colour camera is nearer 84).  [default: 55]")
@click.option("--intrinsics", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON file with a 3x3 camera matrix in pixels (instead of --fov).")
@click.option("--num-aug", type=click.IntRange(1), default=5, show_default=True,
              help="MeTRAbs test-time augmentations per person (1 is much faster).")
@click.option("--max-detections", type=click.IntRange(-1), default=None,
              help="MeTRAbs: keep the top-k person boxes per frame (-1 all).  [default: max-people + 2]")
@click.option("--detector-threshold", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="MeTRAbs person detector threshold.")
@click.option("--internal-batch-size", type=click.IntRange(0), default=64, show_default=True,
              help="MeTRAbs crops per inner step (0: all at once); larger needs more GPU memory.")
@click.option("--shard", default=None, metavar="K/N",
              help="Process only the videos of shard K of N (K from 1; stable hash of the clip name), so N "
                   "processes or machines can fill one cache.")
@click.option("--limit-frames", type=click.IntRange(1), default=None,
              help="Decode at most the first N frames of each video.")
@click.option("--stride", type=click.IntRange(1), default=1, show_default=True, help="Keep every N-th frame.")
@click.option("--retry-failed", is_flag=True, help="Extract again the videos whose stored status is a failure.")
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False), default=None, metavar="FILE",
              help="Labels: an mmaction2 list ('relative/path label' per line; label = class index or name) or a "
                   "CSV 'path,label'. Default: NTU names, else class folders VIDEOS/<class>/<clip>, else none.")
@click.pass_context
@user_errors
def extract(ctx: click.Context, videos: tuple[str, ...], out: str, extractor: str, pose_model: str | None,
            skeletons: str | None, max_people: int, batch_size: int, fov: float | None, intrinsics: str | None,
            num_aug: int, max_detections: int | None, detector_threshold: float, internal_batch_size: int,
            shard: str | None, limit_frames: int | None, stride: int, retry_failed: bool,
            labels_file: str | None) -> None:
    """Extract 3D skeletons from videos into an HDF5 cache (MeTRAbs or MediaPipe).

    VIDEOS are files or folders (searched recursively for video extensions, sorted).  NTU RGB+D
    names (S001C001P001R001A001_rgb.avi) give the clip name, label, subject, camera, setup and
    replication; when every name is an NTU name, the class names and the standard splits are
    stored too.  Otherwise labels come from --labels FILE, or from class folders (VIDEOS/<class>/<clip>:
    class names = folder names, sorted), or clips stay unlabelled; --labels wins over NTU names and
    folders.  Poses are stored in metres, Kinect camera axes (x to the camera's left, y up,
    z forward), (T, M, V, 3) per convention, with per-frame person scores and frame indices.

    Into an existing cache with other conventions (--skeletons NEW), the new conventions are added to
    the clips the cache holds, matched by clip name; videos whose clip the cache lacks, or labels
    differently, are listed and not added.

    Every clip is committed on its own (crash-safe: after a kill at most the clip in progress is
    redone).  Videos that cannot be decoded, are empty or show nobody are recorded with that
    status and the run goes on; a table summarises the run.
    """
    from msclr import console
    from msclr.extractors.jobs import parse_shard
    from msclr.extractors.registry import check_options, extractor_factory, resolve_conventions
    from msclr.pipeline import extract as ex

    try:
        conventions = resolve_conventions(extractor, skeletons)
        shard_kn = parse_shard(shard) if shard else None
        check_options(extractor, pose_model=pose_model, fov=fov, intrinsics=intrinsics,
                      max_detections=max_detections)
    except MsclrError as err:
        raise click.UsageError(str(err), ctx) from None
    factory = extractor_factory(extractor, conventions, max_persons=max_people, pose_model=pose_model, fov=fov,
                                intrinsics=intrinsics, num_aug=num_aug, max_detections=max_detections,
                                detector_threshold=detector_threshold, internal_batch_size=internal_batch_size,
                                verbose=verbose_requested())
    opts = ex.ExtractOptions(batch_size=batch_size, stride=stride, limit_frames=limit_frames,
                             max_persons=max_people, retry_failed=retry_failed, shard=shard_kn, labels=labels_file)
    with console.ExtractBars() as progress:
        summary = ex.extract_videos(videos, out, factory, conventions, opts, progress)
    console.print_extract_summary(summary, out)
    console.print_merge([(r.name, r.status, r.message) for r in summary.refused], added=summary.added,
                        complete=summary.complete, conventions=summary.conventions,
                        new_conventions=summary.new_conventions, out_dir=out)
    sys.exit(summary.exit_code)


@cli.group(name="import")
def import_() -> None:
    """Import existing skeleton datasets (NTU .skeleton files, pyskl pickles) into a cache."""


@import_.command(name="ntu")
@click.argument("skeleton_dir", type=click.Path(exists=True, file_okay=True, dir_okay=True))
@click.option("--out", "-o", required=True, type=click.Path(), help="Cache directory (created, or resumed).")
@click.option("--benchmark", type=click.Choice(["ntu60", "ntu120"]), default=None,
              help="Class names and splits of NTU-60 (xsub/xview) or NTU-120 (xsub/xset). Default: "
                   "ntu120 if any file lies outside NTU-60, else ntu60. ntu60 skips files outside NTU-60.")
@click.option("--skip-missing/--keep-missing", default=True, show_default=True,
              help="Leave out the samples on NTU's list of missing or incomplete skeletons.")
@click.option("--body-order", type=click.Choice(["motion", "file"]), default="motion", show_default=True,
              help="motion: rank Kinect body tracks by motion after removing furniture (NTU FAQ / "
                   "pyskl); file: first two bodies of each frame as listed (st-gcn, AimCLR, MS-CLR).")
@click.option("--strict", is_flag=True,
              help="Make a failed sanity check (bone lengths, up axis, left/right, empty frames) an error: exit 1, "
                   "nothing written.")
@user_errors
def import_ntu(skeleton_dir: str, out: str, benchmark: str | None, skip_missing: bool, body_order: str,
               strict: bool) -> None:
    """Import NTU RGB+D .skeleton files into a cache.

    SKELETON_DIR is the folder the NTU skeleton archive extracts to (searched recursively). Each file
    becomes a clip of convention ntu_kinect_25, (T, 2, 25, 3) metres at 30 fps, with label, subject,
    camera, setup and replication from its name; frames without a body stay as zero rows.  Rerunning
    resumes (finished clips skipped, failures retried).  The NTU splits and class names are stored.
    A malformed file is recorded (status parse_error, with file and line), the import goes on, and the
    exit status is 1 if any file failed.  Into a cache with other conventions (e.g. MeTRAbs skeletons of
    the NTU videos), ntu_kinect_25 is added to the clips the cache holds.  A sample of the files is
    checked first (bone lengths, up axis, left/right, empty frames): a warning, or an error with --strict.
    """
    from msclr import console
    from msclr.pipeline.datasets.importers import import_ntu as run_import

    bench = None if benchmark is None else int(benchmark[3:])
    with console.count_bar("import ntu") as progress:
        report = run_import(skeleton_dir, out, benchmark=bench, skip_missing=skip_missing,
                            body_order=body_order, strict=strict, progress=progress)  # type: ignore[arg-type]
    console.print_import_checks(report.sanity)
    console.print_ntu_import(report, out)
    _print_merge(report, out)


@import_.command(name="pyskl")
@click.argument("annotation", type=click.Path(exists=True, dir_okay=False))
@click.option("--skeleton", "-s", required=True,
              help="Joint convention of the keypoints (msclr skeletons lists them; or a .toml/.json file), "
                   "e.g. ntu_kinect_25 for pyskl's NTU files, kinect_v1_20 for UTD-MHAD.")
@click.option("--out", "-o", required=True, type=click.Path(), help="Cache directory (created, or resumed).")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Multiply coordinates by this; msclr stores metres, so use 0.001 for a millimetre file.")
@click.option("--axes", default=None, metavar="SPEC", callback=lambda ctx, p, v: _checked_axes(v),
              help="The file's axes as the new x,y,z, e.g. -x,-y,z; presets y-up (as stored), y-down (-x,-y,z), "
                   "z-up (x,z,-y). msclr stores Kinect camera axes: x to the camera's left, y up, z away.")
@click.option("--class-names", type=click.Path(exists=True, dir_okay=False), default=None,
              help="UTF-8 text file with one class name per line, label 0 first.")
@click.option("--strict", is_flag=True,
              help="Make a failed sanity check (bone lengths, up axis, left/right, empty frames) an error: exit 1, "
                   "nothing written.")
@user_errors
def import_pyskl(annotation: str, skeleton: str, out: str, scale: float, axes: str | None, class_names: str | None,
                 strict: bool) -> None:
    """Import a pyskl / mmaction2 3D annotation pickle into a cache.

    ANNOTATION is a .pkl with 'annotations' (frame_dir, 0-based label, keypoint [M, T, V, 3],
    total_frames) and optionally 'split'.  It is read with a restricted unpickler (plain data
    and numpy arrays only) and validated as a whole before anything is written; keypoints are
    taken as metres in Kinect camera space (see --scale, --axes).  Each frame_dir becomes a clip, the
    splits become the cache's named splits, and NTU fields are parsed from NTU names.  Into a cache with
    other conventions, --skeleton is added to the clips the cache holds (matched by frame_dir).  The data
    are checked against the convention first (bone lengths, up axis, left/right, empty frames): a
    warning with the numbers and the likely fix, or an error with --strict.
    """
    from msclr import console
    from msclr.pipeline.datasets.importers import import_pyskl as run_import

    with console.count_bar("import pyskl") as progress:
        report = run_import(annotation, out, skeleton=skeleton, scale=scale, axes=axes, class_names=class_names,
                            strict=strict, progress=progress)
    console.print_import_checks(report.sanity)
    console.print_lines(f"{report.found} annotations: {report.imported} imported, {report.already} already in the "
                        f"cache -> {out}",
                        report.splits and "splits: " + ", ".join(f"{k} {v}" for k, v in report.splits.items()))
    _print_merge(report, out)


def _checked_axes(spec: str | None) -> str | None:
    """``--axes`` checked at parse time (a usage error, exit 2)."""
    if spec is not None:
        from msclr.pipeline.datasets.sanity import parse_axes

        try:
            parse_axes(spec)
        except MsclrError as err:
            raise click.BadParameter(str(err)) from None
    return spec


def _print_merge(report: Any, out: str) -> None:
    """An import's merge lines; exit 1 when a file failed or a clip's label differs from the cache's."""
    from msclr import console

    console.print_merge(report.refused, added=report.added, complete=report.complete,
                        conventions=report.conventions, new_conventions=report.new_conventions, out_dir=out)
    if report.failures or any(decision == "label_differs" for _, decision, _ in report.refused):
        sys.exit(1)


@cli.command()
@click.argument("cache", type=click.Path(exists=True, file_okay=True, dir_okay=True))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="Output .pkl file.")
@click.option("--skeleton", "-s", default=None,
              help="Convention to export; may be left out when the cache holds only one.")
@click.option("--split-prefix", "split_prefixes", multiple=True,
              help="Export only the splits whose names start with this (repeatable), e.g. xsub.")
@user_errors
def export(cache: str, out: str, skeleton: str | None, split_prefixes: tuple[str, ...]) -> None:
    """Export one skeleton convention of a cache as a pyskl / mmaction2 annotation pickle.

    Every usable clip becomes {frame_dir, label (0-based), keypoint [M, T, V, 3] float32 metres at
    its raw length with M = its persons, total_frames}; the cache's splits go to 'split'.  The
    file is written atomically (a temporary file, then renamed).
    """
    from msclr.console import count_bar, print_lines
    from msclr.pipeline.datasets.pyskl import export_pyskl

    with count_bar("export") as progress:
        summary = export_pyskl(cache, out, skeleton=skeleton, split_prefixes=split_prefixes, progress=progress)
    splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items()) or "none"
    print_lines(f"{summary['clips']} clips of {summary['convention']} -> {summary['out']} (splits: {splits})")


@cli.command()
@click.argument("cache", type=click.Path(exists=True, file_okay=True, dir_okay=True))
@click.option("--segment-size", type=click.IntRange(1), default=1024, show_default=True,
              help="Clips per new segment file.")
@user_errors
def compact(cache: str, segment_size: int) -> None:
    """Merge a cache's many small segment files into a few large ones.

    `msclr extract` commits each clip as its own file (for NTU-60 about 57,000 files, all read when the
    cache opens).  `compact` copies the latest version of every clip (failed records too) into segments
    of --segment-size clips, then deletes the old files: same content, splits and statuses; killed at any
    point the cache stays readable and a rerun finishes the job.  Run it when no other process uses the cache.
    """
    from msclr.console import count_bar, print_lines
    from msclr.pipeline.cache.compact import compact_cache

    with count_bar("compact") as progress:
        report = compact_cache(cache, segment_size=segment_size, progress=progress)
    print_lines(f"{report.clips} clips: {report.segments_before} -> {report.segments_after} segment files, "
                f"{report.bytes_before / 1e6:.1f} -> {report.bytes_after / 1e6:.1f} MB in {report.seconds:.1f} s")


@cli.command(epilog="""\b
Examples:
  msclr info cache/            # the summary (checks every segment's metadata against its seal)
  msclr info cache/ --json     # the same as JSON
  msclr info cache/ --verify   # also check every pose coordinate (reads the whole cache)""")
@click.argument("cache", type=click.Path(file_okay=True, dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print Cache.info() as JSON.")
@click.option("--verify", is_flag=True,
              help="Also check the pose data of every segment against its checksum (reads the whole cache; "
                   "exit 1 if any segment is damaged).")
@user_errors
def info(cache: str, as_json: bool, verify: bool) -> None:
    """Summarise a cache: clips, conventions, frames, classes, splits, persons, extractor.

    CACHE is the directory written by `msclr extract` or `msclr import`. Opening it checks each segment's
    seal (everything but the raw pose coordinates); --verify checks the coordinates too.
    """
    from msclr.console import count_bar, print_cache_summary, print_lines
    from msclr.pipeline.cache import Cache

    opened = Cache(cache)
    summary = opened.info()
    if verify:
        with count_bar("verify") as progress:
            report = opened.verify(progress=progress)
        summary["verify"] = report.to_dict()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        print_cache_summary(summary, verify)
        if any(v != summary["clips"] for v in summary["holding"].values()):
            print_lines("clips holding each convention: " + ", ".join(f"{k} {v}" for k, v in summary["holding"].items())
                        + f"; {summary['complete']} of {summary['clips']} clips hold all of them (msclr train uses those)")
    if verify and summary["verify"]["damaged"]:
        sys.exit(1)


@cli.command(epilog="""\b
Examples:
  msclr split cache/ --by random --test 0.2          # splits random_train / random_val
  msclr split cache/ --by subject --seed 1           # whole subjects on each side: subject_train / subject_val
  msclr split utd/ --by '_s[2468]_' --name evensub   # clips matching the pattern are the test side
  msclr train cache/ --out run/ --split random""")
@click.argument("cache", type=click.Path(file_okay=True, dir_okay=True))
@click.option("--by", "by", default="random", show_default=True, metavar="random|subject|REGEX",
              help="random: stratified by class; subject: stratified, each subject on one side; anything else is a "
                   "regular expression on clip names (matches: test side).")
@click.option("--test", "test", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True, help="Fraction of each class's clips on the test side (random, subject).")
@click.option("--seed", type=int, default=0, show_default=True, help="The same seed gives the same split.")
@click.option("--name", default=None, help="Name of the pair NAME_train / NAME_val. Default: random, subject or custom.")
@click.option("--force", is_flag=True, help="Replace a pair of the same name.")
@click.pass_context
@user_errors
def split(ctx: click.Context, cache: str, by: str, test: float, seed: int, name: str | None, force: bool) -> None:
    """Write a seeded train/test pair of splits into a cache (NAME_train, NAME_val).

    Stratified: each class with two or more clips gets clips on both sides (with --by subject, as far as
    the subjects allow); unlabelled clips go to the train side.  The splits file is rewritten atomically;
    an existing pair of the same name is kept unless --force.
    """
    from msclr.console import note, print_lines
    from msclr.pipeline.datasets.cache_splits import DEFAULT_NAMES, compile_pattern, split_cache

    if by not in DEFAULT_NAMES:
        try:
            compile_pattern(by)
        except MsclrError as err:
            raise click.BadParameter(str(err), ctx, param_hint="--by") from None
    result = split_cache(cache, by=by, test=test, seed=seed, name=name, force=force)
    (train, val), total = result.splits, len(result.train) + len(result.test)
    print_lines(f"{train}: {len(result.train)} clips, {val}: {len(result.test)} clips "
                f"({len(result.test) / total:.1%} test) -> {cache}",
                "test subjects: " + ", ".join(str(s) for s in result.test_groups) if result.test_groups else None,
                f"{result.unlabelled} unlabelled clips (train side, unless --by REGEX matched them)"
                if result.unlabelled else None)
    if result.one_sided:
        note(f"{len(result.one_sided)} of {result.classes} classes have clips on one side only (labels "
             f"{', '.join(str(c) for c in result.one_sided[:10])}): their subjects could not be divided")
