"""``msclr predict``: named actions for one clip, from a finished training run.

The entry points share one path:

- :func:`predict_skeletons` takes poses already in memory (convention -> ``(T, M, V, 3)`` metres,
  Kinect camera axes, as in the cache) and returns a :class:`Prediction`;
- :func:`predict_stored` classifies a clip stored as skeletons, no video needed: a cache clip
  (``msclr predict --from-cache CACHE --clip NAME``) or a pyskl annotation pickle's sample
  (``--from-pyskl FILE --clip NAME``); the way to use a run whose conventions no extractor produces
  (a user-defined skeleton, NTU's Kinect ``kinect_v1_20``);
- :func:`predict_video` extracts every convention the run needs from a video in ONE extractor pass
  (:func:`msclr.pipeline.extract.extract_video`, the code path of ``msclr extract``, with the run's
  person slots M), then calls :func:`predict_skeletons`, and optionally renders the clip with the
  skeletons and the top label (:mod:`msclr.pipeline.render`).

Prediction = training's preprocessing (``run.json["preprocessing"]``: length, centring, y-rotation,
valid-frame rule) -> every stream's encoder -> one linear classifier per convention ->
:meth:`TrainedRun.scores` (skeleton ensemble per stream, then 3-stream fusion), with the weights of one
evaluation protocol of the run: the fine-tuned model when the run has one, else linear evaluation's
(``protocol=`` / ``--protocol`` to choose; :func:`msclr.pipeline.trained.choose_protocol`).  The loading
itself (:class:`TrainedRun`, :func:`load_run`, :func:`open_run`) lives in :mod:`msclr.pipeline.trained`.

**Displayed probabilities** sum to 1 in both ensemble modes (:func:`_display_probabilities`).

**The RUN folder is self-contained** (:mod:`msclr.pipeline.rundir`): ``run.json`` (conventions, streams,
preprocessing with the person slots M, classes, ensemble/fusion modes) and ``model.pt`` (skeleton
definitions, encoder and classifier weights, loaded with ``torch.load(weights_only=True)``: a file carrying
pickled objects is refused before anything in it runs).  The cache the run was trained on is not needed.

**Which extractor produces what** is the extractor registry's knowledge (:mod:`msclr.extractors.registry`).

**Serving an NTU-Kinect model from video** (:data:`msclr.extractors.registry.SERVED_BY`): a run trained on ``ntu_kinect_25`` is fed
MeTRAbs' ``kinectv2_25`` in its place.  The two share the joint order index by index (0 SpineBase/spinebase,
4 ShoulderLeft/lsho, 8 ShoulderRight/rsho, 20 SpineShoulder/spineshoulder, 24 ThumbRight/rthu; the whole table
is in docs/method.md, "kinectv2_25 serves ntu_kinect_25"), so the arrays are passed unchanged and the model
keeps its own NTU graph and centre; the graphs differ only in the hand edges.  :func:`~msclr.extractors.registry.substitute_compatible`
checks at run time that both definitions have the same joint count and left/right flip permutation, and every
prediction lists the substitution under ``conventions`` (``{"ntu_kinect_25": "kinectv2_25"}``).  Whether
MeTRAbs' left and right match NTU's is unverified on the real model (docs/method.md explains the caveat):
compare its output with an NTU ``.skeleton`` file before relying on lateral classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msclr.errors import CacheError, ExtractionError, MsclrError
from msclr.extractors.registry import SERVED_BY, serving_plan, substitute_compatible
from msclr.pipeline.cache import ClipStatus
from msclr.pipeline.rundir import RunInfo
from msclr.pipeline.trained import TrainedRun, open_run
from msclr.skeletons import Skeleton


class NoPersonError(MsclrError):
    """The clip shows nobody (no frame with a usable person)."""


# ----------------------------------------------------------------------------- result
@dataclass
class Prediction:
    """What a prediction found.

    Attributes:
        classes: the run's class names (label order).
        probabilities: ``(C,)`` float64 display probabilities (sum 1; see the module docstring).
        top: the top-k as dicts ``rank, label, class, probability``, best first.
        score: how ``probabilities`` were obtained (mode of the run, and any softmax for display).
        conventions: model convention -> the convention of the poses fed to it.
        streams: streams used (``joint``, ``motion``, ``bone``).
        per_model: stream -> convention -> that single classifier's top-1 (class, label, probability).
        frames: frames of the clip (T before resampling); persons: person slots that hold someone.
        max_persons: M the run uses.
        extractor, model_id, source, fps: provenance (empty / NaN when unknown, e.g. from skeletons in memory).
        render: path of the rendered video, if any.
        notes: remarks (substitutions, guesses).
        protocol: the evaluation protocol whose model classified the clip; protocols: every one the run has.
    """

    classes: list[str]
    probabilities: np.ndarray
    top: list[dict[str, Any]]
    score: str
    conventions: dict[str, str]
    streams: list[str]
    per_model: dict[str, dict[str, dict[str, Any]]]
    frames: int
    persons: int
    max_persons: int
    run: str = ""
    extractor: str = ""
    model_id: str = ""
    source: str = ""
    fps: float = math.nan
    render: str | None = None
    notes: list[str] = field(default_factory=list)
    protocol: str = ""
    protocols: list[str] = field(default_factory=list)

    @property
    def label(self) -> int:
        """The top-1 class index."""
        return int(self.top[0]["label"])

    @property
    def name(self) -> str:
        """The top-1 class name."""
        return str(self.top[0]["class"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (what ``msclr predict --json`` prints)."""
        return {
            "clip": self.source or None, "model": self.run, "protocol": self.protocol or None,
            "protocols": self.protocols, "top_k": self.top, "score": self.score,
            "conventions": self.conventions, "streams": self.streams, "per_model": self.per_model,
            "extractor": self.extractor or None, "pose_model": self.model_id or None, "frames": self.frames,
            "fps": self.fps if math.isfinite(self.fps) else None, "persons": self.persons,
            "max_persons": self.max_persons, "num_classes": len(self.classes), "render": self.render,
            "notes": self.notes,
        }


def _fit_persons(poses: np.ndarray, m: int) -> np.ndarray:
    """(T, M', V, 3) -> (T, m, V, 3): keep the first m slots (the most salient) or pad with zeros."""
    if poses.shape[1] >= m:
        return poses[:, :m]
    pad = np.zeros((poses.shape[0], m - poses.shape[1], *poses.shape[2:]), poses.dtype)
    return np.concatenate([poses, pad], axis=1)


def _resolve_inputs(model_convs: Sequence[str], skeletons: Mapping[str, Skeleton],
                    poses: Mapping[str, np.ndarray]) -> dict[str, str]:
    used: dict[str, str] = {}
    for conv in model_convs:
        if conv in poses:
            used[conv] = conv
        elif conv in SERVED_BY and SERVED_BY[conv] in poses:
            used[conv] = SERVED_BY[conv]
    if not used:
        subs = "".join(f"; {k} can be served by {v}" for k, v in SERVED_BY.items() if k in model_convs)
        raise MsclrError(f"the poses given ({', '.join(poses) or 'none'}) contain none of the run's conventions "
                         f"({', '.join(model_convs)}{subs}); extract one of those.")
    return used


def predict_skeletons(run: str | Path | Any, poses_by_convention: Mapping[str, np.ndarray], *, top_k: int = 5,
                      device: str = "cpu", protocol: str | None = None) -> Prediction:
    """Classify one clip given as skeletons.

    Args:
        run: a run folder, or a :class:`TrainedRun` already loaded (by :func:`open_run`).
        poses_by_convention: convention -> ``(T, M', V, 3)`` float metres, Kinect camera axes, absent
            persons all zeros (a cache clip's ``poses``).  Keys may be the run's conventions or
            their :data:`SERVED_BY` substitutes; conventions the run does not know are ignored;
            conventions of the run that are missing are left out of the ensemble (noted).  The
            person axis is cut or zero-padded to the run's M.
        top_k: classes to return (at most the number of classes).
        device: ``cpu`` / ``cuda`` when ``run`` is a path.
        protocol: the run's protocol to predict with when ``run`` is a path (default: the fine-tuned model
            when there is one, see :func:`msclr.pipeline.trained.choose_protocol`).

    Returns:
        a :class:`Prediction` (``frames`` = T; provenance fields empty).

    Raises:
        NoPersonError: no frame of the clip holds a person.
        MsclrError: none of the run's conventions is given, or joint counts do not match.
    """
    from msclr.models.fusion import softmax

    trained = open_run(run, device=device, protocol=protocol) if isinstance(run, str | Path) else run
    info = trained.info
    model_convs = list(info.conventions)
    used = _resolve_inputs(model_convs, trained.skeletons, poses_by_convention)
    notes: list[str] = []
    inputs, frames, persons = _model_inputs(trained, used, poses_by_convention, notes)
    missing = [c for c in model_convs if c not in used]
    if missing:
        notes.append(f"ensemble without {', '.join(missing)} (not given)")
    scores = trained.scores(inputs)
    streams = list(scores["streams"])
    probs, score = _display_probabilities(info, streams, np.asarray(scores["final"], dtype=np.float64)[0],
                                          several=len(inputs) > 1)
    classes = trained.classes
    order = np.argsort(-probs, kind="stable")[: max(1, min(top_k, len(classes)))]
    top = [{"rank": r + 1, "label": int(i), "class": classes[i], "probability": float(probs[i])}
           for r, i in enumerate(order)]
    per_model: dict[str, dict[str, dict[str, Any]]] = {}
    for stream, by_conv in scores["logits"].items():
        per_model[stream] = {}
        for conv, logits in by_conv.items():
            p = softmax(np.asarray(logits[0], dtype=np.float64))
            best = int(np.argmax(p))
            per_model[stream][conv] = {"class": classes[best], "label": best, "probability": float(p[best])}
    return Prediction(classes=classes, probabilities=probs, top=top, score=score, conventions=used,
                      streams=streams, per_model=per_model, frames=frames, persons=persons,
                      max_persons=info.preprocessing.max_persons,
                      run=str(run) if isinstance(run, str | Path) else "", notes=notes, protocol=trained.protocol,
                      protocols=list(trained.protocols) or [trained.protocol])


def _model_inputs(trained: TrainedRun, used: Mapping[str, str], poses_by_convention: Mapping[str, np.ndarray],
                  notes: list[str]) -> tuple[dict[str, np.ndarray], int, int]:
    """Check and preprocess the poses fed to each model convention: (inputs (1, 3, T, V, M), frames, persons)."""
    from msclr.pipeline.preprocess import EmptyClipError, preprocess_clip
    from msclr.skeletons import get_skeleton

    m = trained.info.preprocessing.max_persons
    options = trained.info.preprocessing.clip_options()
    inputs: dict[str, np.ndarray] = {}
    frames = persons = 0
    for conv, source in used.items():
        skel = trained.skeletons[conv]
        arr = np.asarray(poses_by_convention[source], dtype=np.float32)
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise MsclrError(f"poses of {source} must be (T, M, V, 3), got shape {arr.shape}.")
        if arr.shape[2] != skel.num_joints:
            raise MsclrError(f"poses of {source} have {arr.shape[2]} joints but the run's {conv} has "
                             f"{skel.num_joints}; pass the convention the poses are in.")
        if source != conv:
            if not substitute_compatible(skel, get_skeleton(source)):
                raise MsclrError(f"{source} cannot stand in for {conv} (different joints or left/right pairs).")
            notes.append(f"{conv} served by {source} (same joint order; see `msclr predict --help`)")
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        frames = max(frames, arr.shape[0])
        persons = max(persons, int(np.any(arr != 0, axis=(0, 2, 3)).sum()))
        try:
            sample = preprocess_clip(_fit_persons(arr, m), skel, **options)
        except EmptyClipError:
            raise NoPersonError(f"nobody in the clip: no frame of its {source} skeletons holds a person "
                                f"({arr.shape[0]} frames); use a clip that shows a person's body.") from None
        inputs[conv] = sample[None]
    return inputs, frames, persons


def _display_probabilities(info: RunInfo, streams: list[str], final: np.ndarray, *,
                           several: bool) -> tuple[np.ndarray, str]:
    """The fused (C,) score as probabilities that sum to 1, and a sentence saying how they were obtained.

    In ``softmax`` mode the run averages per-classifier softmax probabilities (ensemble) and fuses streams with
    weights (0.6 joint, 0.6 bone, 0.4 motion); the fused score is divided by the sum of the weights of the
    streams used, so it is a weighted *mean* of probabilities (the ranking is unchanged).  In ``logits`` mode
    the run averages logits; they become probabilities for display with a softmax of the weighted mean, and
    ``Prediction.score`` / the JSON key ``"score"`` says so.
    """
    from msclr.models.fusion import softmax

    if len(streams) > 1:
        mode = info.fusion.mode
        final = final / sum(float(info.fusion.weights[s]) for s in streams)
        how = "weighted mean over streams (fusion weights normalised) of "
    else:
        mode = info.ensemble_mode
        how = ""
    if mode == "logits":
        return softmax(final), ("softmax, for display, of the " + how + (
            "mean of the classifiers' logits" if several else "classifier's logits") + " (the run averages logits)")
    return final, how + ("mean of the classifiers' softmax probabilities" if several else "softmax probabilities")


# ----------------------------------------------------------------------------- from stored skeletons
def _cache_clip(cache_path: str | Path, clip: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Poses (every convention the clip holds) and provenance of one cache clip."""
    from msclr.errors import closest
    from msclr.pipeline.cache import Cache

    cache = Cache(cache_path)
    if clip not in cache:
        raise CacheError(f"clip {clip!r} is not in cache {cache.root}{closest(clip, cache.names)}; `msclr info "
                         f"{cache.root}` summarises its {len(cache.names)} usable clips.")
    conventions = cache.conventions_of(clip)
    if not conventions:
        status, message = cache.statuses()[clip]
        raise CacheError(f"clip {clip!r} of cache {cache.root} has no poses (status {status}: {message}).")
    meta = cache.metadata([clip])
    poses = {c: cache.poses(c, [clip])[0] for c in conventions}
    return poses, {"label": int(meta["label"][0]), "fps": float(meta["fps"][0]), "where": f"cache {cache.root}",
                   "extractor": str(meta["extractor"][0]), "model_id": str(meta["model_id"][0])}


def _pyskl_clip(path: str | Path, clip: str, trained: TrainedRun, skeleton: str | None,
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Poses and provenance of one sample of a pyskl annotation pickle, read as ``skeleton`` (default: the first
    of the run's conventions the file's keypoints fit)."""
    from msclr.errors import ImportFormatError, UnsafePickleError, closest
    from msclr.pipeline.datasets.pyskl import annotation_to_clip, read_annotations
    from msclr.skeletons import get_skeleton

    candidates = [get_skeleton(skeleton)] if skeleton else list(trained.skeletons.values())
    problems = []
    for skel in candidates:
        try:
            annotations = read_annotations(path, skel)
        except UnsafePickleError:
            raise
        except ImportFormatError as err:
            problems.append(str(err))
            continue
        found = {a.frame_dir: a for a in annotations.annotations}
        if clip not in found:
            raise MsclrError(f"{path} has no sample {clip!r}{closest(clip, found)} ({len(found)} samples).")
        record = annotation_to_clip(found[clip], convention=skel.name,
                                    max_persons=trained.info.preprocessing.max_persons)
        return record.poses, {"label": int(record.label), "fps": float(record.fps), "where": f"pyskl file {path}",
                              "extractor": "import-pyskl", "model_id": ""}
    raise MsclrError(f"the keypoints of {path} fit none of {', '.join(s.name for s in candidates)} "
                     f"({problems[0] if problems else 'no convention'}); name their convention with --skeleton.")


def predict_stored(run: str | Path | Any, clip: str, *, cache: str | Path | None = None,
                   pyskl: str | Path | None = None, skeleton: str | None = None, top_k: int = 5,
                   device: str = "cpu", protocol: str | None = None) -> Prediction:
    """Classify one clip stored as skeletons, without a video: a clip of a cache, or a sample of a pyskl /
    mmaction2 annotation pickle (read with :func:`msclr.pipeline.datasets.pyskl.read_annotations`).

    Args:
        run: a run folder, or a :class:`TrainedRun`.
        clip: the clip name (cache) or ``frame_dir`` (pyskl).
        cache / pyskl: where the clip is (exactly one).
        skeleton: the convention of the pyskl keypoints (name or skeleton file; default: the first of the
            run's conventions the file fits).
        top_k, device, protocol: see :func:`predict_skeletons`.

    Raises:
        CacheError / MsclrError: no such clip (the closest name suggested) or no poses;
        ImportFormatError: an unreadable pickle.
    """
    if (cache is None) == (pyskl is None):
        raise MsclrError("give exactly one of a cache (--from-cache) and a pyskl file (--from-pyskl).")
    trained = open_run(run, device=device, protocol=protocol) if isinstance(run, str | Path) else run
    poses, meta = _cache_clip(cache, clip) if cache is not None else _pyskl_clip(pyskl, clip, trained, skeleton)  # type: ignore[arg-type]
    prediction = predict_skeletons(trained, poses, top_k=top_k, device=device)
    prediction.run = str(run) if isinstance(run, str | Path) else ""
    prediction.source, prediction.fps = clip, meta["fps"]
    prediction.extractor, prediction.model_id = meta["extractor"], meta["model_id"]
    prediction.notes.insert(0, f"skeletons read from {meta['where']}")
    if 0 <= meta["label"] < len(trained.classes):
        prediction.notes.append(f"stored label: {trained.classes[meta['label']]} ({meta['label']})")
    return prediction


# ----------------------------------------------------------------------------- from a video
ExtractorFactory = Callable[[Sequence[Skeleton], int], Any]
"""``(skeletons to extract, person slots M) -> extractor`` (see :mod:`msclr.extractors.base`); the default
builds the ``extractor`` kind with :func:`msclr.extractors.registry.build_extractor`."""


def _registry_factory(extractor: str, pose_model: str | None, *, record_2d: bool, verbose: bool) -> ExtractorFactory:
    """The default :data:`ExtractorFactory`: the ``extractor`` kind built by the extractor registry."""
    from msclr.extractors.registry import build_extractor, check_options

    check_options(extractor, pose_model=pose_model)

    def build(skeletons: Sequence[Skeleton], max_persons: int) -> Any:
        return build_extractor(extractor, skeletons, max_persons=max_persons, pose_model=pose_model,
                               record_2d=record_2d, verbose=verbose)

    return build


def _extract_one(path: Path, ext: Any, options: Any, progress: Any) -> Any:
    """The clip of one video through ``msclr extract``'s code path; :class:`NoPersonError` /
    :class:`ExtractionError` unless its status is ok.  Closes the extractor."""
    from msclr.extractors.jobs import VideoJob, clip_name_for
    from msclr.pipeline.extract import extract_video

    try:
        name, _ = clip_name_for(path)
        clip = extract_video(VideoJob(path, name, None), ext, options, progress)
    finally:
        ext.close()
    if clip.status == ClipStatus.NO_PERSON:
        raise NoPersonError(f"nobody in the clip {path}: {clip.message} ({ext.name}). Use a clip that shows a "
                            "person's body.")
    if clip.status != ClipStatus.OK:
        raise ExtractionError(f"cannot extract skeletons from {path} ({clip.status}): {clip.message}")
    return clip


def predict_video(video: str | Path, run: str | Path | Any, *, extractor: str = "metrabs",
                  pose_model: str | None = None, top_k: int = 5, device: str = "cpu",
                  render: str | Path | None = None, batch_size: int = 16,
                  extractor_factory: ExtractorFactory | None = None, progress: Any = None, verbose: bool = False,
                  render_progress: Callable[[int, int], None] | None = None, protocol: str | None = None) -> Prediction:
    """Extract the run's conventions from ``video`` in one pass, classify, optionally render.

    Args:
        video: a video file OpenCV can decode.
        run: run folder or loaded :class:`TrainedRun`.
        extractor: ``metrabs`` or ``mediapipe`` (decides what can be produced: :func:`serving_plan`).
        pose_model: MeTRAbs SavedModel URL or directory (default: ``msclr extract``'s).
        top_k, device, protocol: see :func:`predict_skeletons`.
        render: write the clip with skeletons and the top label to this ``.mp4`` / ``.avi`` file.
        batch_size: frames per extractor call.
        extractor_factory: build the extractor yourself (tests); default: the ``extractor`` kind with
            :func:`msclr.extractors.registry.build_extractor` (``msclr extract``'s defaults).
        verbose: show TensorFlow's own log lines while MeTRAbs loads.
        progress: an :class:`msclr.pipeline.extract.ExtractProgress` (frames bar).
        render_progress: ``(frames written, total)`` callback while rendering.

    Raises:
        ExtractionError: missing / undecodable video, pose model problems.
        NoPersonError: nobody in the clip.
        MsclrError: conventions the extractor cannot produce, a render path that cannot be written.
        CheckpointError: see :func:`open_run`.
    """
    from msclr.pipeline.extract import ExtractOptions
    from msclr.skeletons import SKELETONS, get_skeleton

    path = Path(video)
    if not path.is_file():
        raise ExtractionError(f"clip {path} does not exist or is not a file; check the path.")
    trained = open_run(run, device=device, protocol=protocol) if isinstance(run, str | Path) else run
    plan = serving_plan(list(trained.info.conventions), extractor)
    render_path = None
    if render is not None:
        from msclr.pipeline.render import check_render_path

        render_path = check_render_path(render)
    m = trained.info.preprocessing.max_persons
    wanted: dict[str, Skeleton] = {}
    for conv, source in plan.items():
        if source not in wanted:
            wanted[source] = trained.skeletons[conv] if source == conv else get_skeleton(source)
    if extractor_factory is None:
        extractor_factory = _registry_factory(extractor, pose_model, record_2d=render is not None, verbose=verbose)
    try:
        ext = extractor_factory(list(wanted.values()), m)
    except ExtractionError as err:  # e.g. a user-defined convention the pose model does not hold
        user = [c for c in plan if c not in SKELETONS]
        raise ExtractionError(f"{err}" + (f" ({', '.join(user)}: user-defined; classify stored skeletons instead: "
                                          "msclr predict --model RUN --from-cache CACHE --clip NAME)" if user else "")
                              ) from None
    clip = _extract_one(path, ext, ExtractOptions(batch_size=batch_size, max_persons=m), progress)
    prediction = predict_skeletons(trained, {source: clip.poses[source] for source in set(plan.values())},
                                   top_k=top_k, device=device)
    if isinstance(run, str | Path):
        prediction.run = str(run)
    prediction.extractor = clip.extractor
    prediction.model_id = clip.model_id
    prediction.source = str(path)
    prediction.fps = clip.fps
    prediction.frames = clip.frames
    if clip.message:
        prediction.notes.append(clip.message)
    if render_path is not None:
        from msclr.pipeline.render import render_prediction

        first = next(iter(plan.values()))
        written = render_prediction(path, render_path, clip, wanted[first], prediction, ext,
                                    progress=render_progress)
        prediction.render = str(written.path)
        prediction.notes.extend(written.notes)
    return prediction


__all__ = ["NoPersonError", "Prediction", "predict_skeletons", "predict_stored", "predict_video"]
