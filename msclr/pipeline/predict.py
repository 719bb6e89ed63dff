"""``msclr predict``: named actions for one clip, from a finished training run.

Two entry points share one path:

- :func:`predict_skeletons` takes poses already in memory (convention -> ``(T, M, V, 3)`` metres,
  Kinect camera axes, as in the cache) and returns a :class:`Prediction`;
- :func:`predict_video` extracts every convention the run needs from a video in ONE extractor pass
  (:func:`msclr.pipeline.extract.extract_video`, the code path of ``msclr extract``, with the run's
  person slots M), then calls :func:`predict_skeletons`, and optionally renders the clip with the
  skeletons and the top label (:mod:`msclr.pipeline.render`).

Prediction = training's preprocessing (``run.json["preprocessing"]``: length, centring, y-rotation,
valid-frame rule) -> every stream's frozen encoder -> one linear classifier per convention ->
:meth:`TrainedRun.scores` (skeleton ensemble per stream, then 3-stream fusion).

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

from msclr.errors import CheckpointError, ExtractionError, MsclrError
from msclr.extractors.registry import SERVED_BY, serving_plan, substitute_compatible
from msclr.pipeline.cache import ClipStatus
from msclr.pipeline.rundir import RunFolder, RunInfo, RunStatus
from msclr.skeletons import Skeleton


class NoPersonError(MsclrError):
    """The clip shows nobody (no frame with a usable person)."""


# ----------------------------------------------------------------------------- the trained network
@dataclass
class TrainedRun:
    """A finished run loaded for inference.

    Attributes:
        info: the run's description (:class:`msclr.pipeline.rundir.RunInfo`; a ``run.json`` mapping given
            here is validated and typed).
        skeletons: convention -> definition (from the run, so user skeletons work without the registry).
        encoders: stream -> frozen :class:`msclr.models.stgcn.MultiSkeletonSTGCN` in eval mode.
        classifiers: stream -> convention -> ``torch.nn.Linear``.
    """

    info: RunInfo
    skeletons: dict[str, Skeleton]
    encoders: dict[str, Any]
    classifiers: dict[str, dict[str, Any]]

    def __post_init__(self) -> None:
        self.info = RunInfo.from_dict(self.info)

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    def logits(self, inputs: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
        """Per-stream, per-convention logits of preprocessed clips.

        Args:
            inputs: convention -> (N, 3, T, V, M) float32 array/tensor, preprocessed like the training data
                (:func:`msclr.pipeline.preprocess.preprocess_clip` with ``info.preprocessing``).
                Conventions the run does not know are ignored; at least one must be known.

        Returns:
            stream -> convention -> (N, C) float32 logits.
        """
        import torch

        from msclr.models.build import encoder_features

        known = [c for c in inputs if c in self.skeletons]
        if not known:
            raise MsclrError(f"none of the conventions {list(inputs)} was trained in this run "
                             f"({', '.join(self.skeletons)}).")
        out: dict[str, dict[str, np.ndarray]] = {}
        for stream, encoder in self.encoders.items():
            device = next(encoder.parameters()).device
            out[stream] = {}
            for conv in known:
                x = torch.as_tensor(np.asarray(inputs[conv], dtype=np.float32)).to(device)
                with torch.no_grad():
                    feats = encoder_features(encoder, x, self.skeletons[conv], stream)
                    out[stream][conv] = self.classifiers[stream][conv](feats).float().cpu().numpy()
        return out

    def scores(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Logits, per-stream skeleton-ensemble scores and the fused score (all streams) for prediction.

        Returns:
            ``{"logits": stream -> conv -> (N, C), "streams": stream -> (N, C) ensemble score,
            "final": (N, C)}``; scores are probabilities in softmax mode (the run's ``ensemble_mode`` /
            ``fusion.mode``), averaged logits in logits mode.
        """
        from msclr.models.fusion import ensemble_scores, fuse_streams

        logits = self.logits(inputs)
        streams = {s: ensemble_scores(v, self.info.ensemble_mode) for s, v in logits.items()}
        if len(streams) > 1:
            fusion = self.info.fusion
            final = fuse_streams({s: ensemble_scores(logits[s], fusion.mode) for s in streams},
                                 fusion.weights, already=fusion.mode)
        else:
            final = next(iter(streams.values()))
        return {"logits": logits, "streams": streams, "final": final}


def load_run(run: str | Path, *, device: str = "cpu") -> TrainedRun:
    """Load a run folder's ``run.json`` and ``model.pt`` (``weights_only=True``) and rebuild the frozen
    encoders and classifiers (see :func:`open_run` for the checks made before)."""
    import torch

    from msclr.models.build import build_encoder
    from msclr.pipeline.config import config_from_dict

    folder = RunFolder(run)
    info = folder.read_info()
    model = folder.read_model()
    skeletons = {name: Skeleton.from_dict(d, origin=f"{run}/model.pt") for name, d in model.skeletons.items()}
    model_cfg = config_from_dict({"model": model.model_config}).model
    encoders, classifiers = {}, {}
    for stream, weights in model.streams.items():
        enc = build_encoder([skeletons[c] for c in model.conventions], model_cfg, head="mlp")
        enc.load_state_dict(weights.encoder)
        encoders[stream] = enc.to(device).eval()
        classifiers[stream] = {}
        for conv, wb in weights.classifiers.items():
            fc = torch.nn.Linear(wb["weight"].shape[1], wb["weight"].shape[0])
            fc.load_state_dict({"weight": wb["weight"], "bias": wb["bias"]})
            classifiers[stream][conv] = fc.to(device).eval()
    return TrainedRun(info, skeletons, encoders, classifiers)


def open_run(run: str | Path, *, device: str = "cpu") -> TrainedRun:
    """Load a FINISHED run for prediction (:func:`load_run` after checks).

    Raises:
        CheckpointError: the folder is missing, is not an msclr run, is not finished (status
            "running": training was interrupted), has no ``model.pt``, or ``model.pt`` is not a
            pickle-free msclr checkpoint (refused before anything in it is executed).
    """
    folder = RunFolder(run)
    if not folder.root.exists():
        raise CheckpointError(f"model folder {folder.root} does not exist; pass the --out folder of `msclr train` "
                              "(e.g. --model run/).")
    if not folder.root.is_dir():
        raise CheckpointError(f"--model {folder.root} is a file; pass the run FOLDER written by `msclr train` "
                              "(the one holding run.json and model.pt).")
    info = folder.read_info()
    if info.status != RunStatus.COMPLETE:
        raise CheckpointError(f"{folder.root} is not a finished run (status {info.status!r}): training stopped "
                              f"before the linear evaluation wrote model.pt. Finish it with `msclr train {info.cache} "
                              f"--out {folder.root} --resume`.")
    if not folder.model.is_file():
        raise CheckpointError(f"{folder.root}/model.pt is missing although run.json says the run is complete; copy "
                              "the whole run folder, or retrain.")
    return load_run(folder.root, device=device)


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
        extractor, model_id, source, fps: provenance (empty / NaN when predicting from skeletons).
        render: path of the rendered video, if any.
        notes: remarks (substitutions, guesses).
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
            "clip": self.source or None, "model": self.run, "top_k": self.top, "score": self.score,
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
                      device: str = "cpu") -> Prediction:
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

    Returns:
        a :class:`Prediction` (``frames`` = T; provenance fields empty).

    Raises:
        NoPersonError: no frame of the clip holds a person.
        MsclrError: none of the run's conventions is given, or joint counts do not match.
    """
    from msclr.models.fusion import softmax

    trained = open_run(run, device=device) if isinstance(run, str | Path) else run
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
                      run=str(run) if isinstance(run, str | Path) else "", notes=notes)


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
                  render_progress: Callable[[int, int], None] | None = None) -> Prediction:
    """Extract the run's conventions from ``video`` in one pass, classify, optionally render.

    Args:
        video: a video file OpenCV can decode.
        run: run folder or loaded :class:`TrainedRun`.
        extractor: ``metrabs`` or ``mediapipe`` (decides what can be produced: :func:`serving_plan`).
        pose_model: MeTRAbs SavedModel URL or directory (default: ``msclr extract``'s).
        top_k, device: see :func:`predict_skeletons`.
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
    from msclr.skeletons import get_skeleton

    path = Path(video)
    if not path.is_file():
        raise ExtractionError(f"clip {path} does not exist or is not a file; check the path.")
    trained = open_run(run, device=device) if isinstance(run, str | Path) else run
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
    ext = extractor_factory(list(wanted.values()), m)
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


__all__ = ["NoPersonError", "Prediction", "TrainedRun", "load_run", "open_run", "predict_skeletons",
           "predict_video"]
