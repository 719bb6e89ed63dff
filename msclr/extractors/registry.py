"""The extractor registry: which pose backends exist, what each produces, and how to build one.

The single place that knows the extractor kinds (``--extractor metrabs|mediapipe``), the skeleton
conventions each can produce and extracts by default, the options each accepts, and how to build
one (:func:`build_extractor`).  Importing this module imports neither TensorFlow nor MediaPipe: the
backends are imported when an extractor is built.

- **metrabs** (:class:`msclr.extractors.metrabs.MetrabsExtractor`): MeTRAbs TensorFlow SavedModel,
  every convention from one pass, people tracked into M slots.  By default ``smpl_24``,
  ``smplx_42``, ``berkeley_mhad_43``, ``kinectv2_25``; it also produces any other skeleton of its
  model whose joint names match a definition (a skeleton file), but never the sensor ground-truth
  conventions of :data:`NOT_FROM_VIDEO` nor MediaPipe's ``blazepose_33``.
- **mediapipe** (:class:`msclr.extractors.mediapipe_pose.MediaPipeExtractor`): BlazePose on the CPU,
  one person, only ``blazepose_33``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from msclr.errors import MsclrError
from msclr.skeletons import Skeleton, get_skeleton

if TYPE_CHECKING:
    from msclr.extractors.base import Extractor

METRABS_CONVENTIONS: tuple[str, ...] = ("smpl_24", "smplx_42", "berkeley_mhad_43", "kinectv2_25")
"""Conventions msclr extracts with MeTRAbs by default (MS-CLR's four)."""

MEDIAPIPE_CONVENTIONS: tuple[str, ...] = ("blazepose_33",)
"""The only convention MediaPipe produces."""

NOT_FROM_VIDEO = frozenset({"ntu_kinect_25", "kinect_v1_20"})
"""Conventions of sensor ground truth (Kinect): no extractor produces them from RGB video."""

METRABS_OPTIONS = ("pose_model", "fov", "intrinsics", "num_aug", "max_detections", "detector_threshold",
                   "internal_batch_size")
"""Options of :func:`build_extractor` only MeTRAbs uses."""

COMMON_OPTIONS = ("record_2d", "verbose")
"""Options of :func:`build_extractor` every kind accepts."""


@dataclass(frozen=True)
class ExtractorSpec:
    """What one extractor kind is and produces.

    Attributes:
        name: the kind (``--extractor`` value, ``Clip.extractor``).
        label: display name.
        summary: one line for ``--extractor`` help.
        produces: built-in conventions it produces, in default cache order.
        defaults: conventions extracted when none are requested.
        any_model_skeleton: it also produces other skeletons of its model by name (MeTRAbs).
        cannot: conventions it never produces (used when ``any_model_skeleton``).
        multi_person: people are tracked into M slots (else one person, slot 0).
        options: the :func:`build_extractor` options it uses besides :data:`COMMON_OPTIONS`.
        hint: what to do instead when a requested convention is not produced.
    """

    name: str
    label: str
    summary: str
    produces: tuple[str, ...]
    defaults: tuple[str, ...]
    any_model_skeleton: bool
    cannot: frozenset[str]
    multi_person: bool
    options: tuple[str, ...]
    hint: str


EXTRACTORS: dict[str, ExtractorSpec] = {
    "metrabs": ExtractorSpec(
        name="metrabs", label="MeTRAbs",
        summary="MeTRAbs TF SavedModel, every convention from one pass (GPU advised).",
        produces=METRABS_CONVENTIONS, defaults=METRABS_CONVENTIONS, any_model_skeleton=True,
        cannot=NOT_FROM_VIDEO | frozenset(MEDIAPIPE_CONVENTIONS), multi_person=True, options=METRABS_OPTIONS,
        hint="use --extractor mediapipe for blazepose_33",
    ),
    "mediapipe": ExtractorSpec(
        name="mediapipe", label="MediaPipe",
        summary="BlazePose 33, one person, CPU (pip install 'msclr[mediapipe]').",
        produces=MEDIAPIPE_CONVENTIONS, defaults=MEDIAPIPE_CONVENTIONS, any_model_skeleton=False,
        cannot=frozenset(), multi_person=False, options=(),
        hint="use --extractor metrabs for MeTRAbs conventions",
    ),
}
"""Every extractor kind, in ``--extractor`` choice order."""

EXTRACTOR_KINDS: tuple[str, ...] = tuple(EXTRACTORS)
"""The kinds, for ``click.Choice``."""

DEFAULT_EXTRACTOR = "metrabs"
"""The kind used when none is given."""


def get_extractor_spec(kind: str) -> ExtractorSpec:
    """The :class:`ExtractorSpec` of a kind.

    Raises:
        MsclrError: unknown kind (the message lists the known ones).
    """
    try:
        return EXTRACTORS[kind]
    except KeyError:
        raise MsclrError(f"unknown extractor {kind!r}; use one of {', '.join(EXTRACTORS)}.") from None


def default_conventions(kind: str) -> tuple[str, ...]:
    """Conventions ``kind`` extracts when none are requested."""
    return get_extractor_spec(kind).defaults


def can_produce(kind: str, convention: str) -> bool:
    """Can ``kind`` produce ``convention`` (a registry name) directly from video?"""
    spec = get_extractor_spec(kind)
    if spec.any_model_skeleton:
        return convention not in spec.cannot
    return convention in spec.produces


def describe_outputs(notes: Mapping[str, str] | None = None) -> str:
    """What every kind produces, for messages: ``"metrabs: smpl_24, ... (+ other MeTRAbs skeletons by
    name); mediapipe: blazepose_33"``; ``notes[kind]`` is added inside that kind's parentheses."""
    parts = []
    for kind, spec in EXTRACTORS.items():
        extra = [f"+ other {spec.label} skeletons by name"] if spec.any_model_skeleton else []
        if notes and kind in notes:
            extra.append(notes[kind])
        parts.append(f"{kind}: {', '.join(spec.produces)}" + (f" ({'; '.join(extra)})" if extra else ""))
    return "; ".join(parts)


def resolve_conventions(kind: str, requested: str | Sequence[str | Skeleton] | None) -> list[Skeleton]:
    """The skeletons of an ``--extractor kind --skeletons a,b`` request (None / empty: the defaults).

    ``requested`` is a comma-separated string or a sequence of names, skeleton file paths or Skeletons.

    Raises:
        MsclrError: an unknown name, a convention the extractor cannot produce, or a repeat.
    """
    spec = get_extractor_spec(kind)
    if isinstance(requested, str):
        items: list[str | Skeleton] = [t.strip() for t in requested.split(",") if t.strip()]
    else:
        items = list(requested or ())
    skels = [get_skeleton(item) for item in items or spec.defaults]
    seen = [s.name for s in skels]
    if len(set(seen)) != len(seen):
        raise MsclrError(f"--skeletons lists a convention twice: {', '.join(seen)}")
    bad = [s for s in seen if not can_produce(kind, s)]
    if bad and spec.any_model_skeleton:
        raise MsclrError(f"{spec.label} does not output {', '.join(bad)}; its conventions include "
                         f"{', '.join(spec.defaults)} ({spec.hint})")
    if bad:
        raise MsclrError(f"--extractor {kind} produces only {', '.join(spec.produces)}, not {', '.join(bad)}; "
                         f"drop --skeletons or {spec.hint}")
    return skels


def check_options(kind: str, **given: Any) -> None:
    """Refuse options (given = not None) that ``kind`` does not use, and ``fov`` with ``intrinsics``;
    keyword names are those of :func:`build_extractor`, reported as command-line flags
    (``pose_model`` -> ``--pose-model``).  Pass only the options the user actually gave.

    Raises:
        MsclrError: e.g. ``"--fov only apply to --extractor metrabs"``, ``"give either --fov or
            --intrinsics, not both"`` (a command line reports it as a usage error).
        TypeError: a keyword that is no option of :func:`build_extractor`.
    """
    spec = get_extractor_spec(kind)
    unknown = sorted(set(given) - set(METRABS_OPTIONS) - set(COMMON_OPTIONS))
    if unknown:
        raise TypeError(f"check_options() got unknown options {unknown}")
    bad = [k for k, v in given.items() if v is not None and k not in spec.options and k not in COMMON_OPTIONS]
    if bad:
        owners = [k for k, s in EXTRACTORS.items() if all(o in s.options for o in bad)]
        flags = ", ".join("--" + k.replace("_", "-") for k in bad)
        raise MsclrError(f"{flags} only apply to --extractor {' / '.join(owners) or '(none)'}")
    if given.get("fov") is not None and given.get("intrinsics") is not None:
        raise MsclrError("give either --fov or --intrinsics, not both")


def build_extractor(kind: str, skeletons: Sequence[str | Skeleton] | None = None, *, max_persons: int = 2,
                    pose_model: str | None = None, fov: float | None = None,
                    intrinsics: str | Path | np.ndarray | None = None, num_aug: int | None = None,
                    max_detections: int | None = None, detector_threshold: float | None = None,
                    internal_batch_size: int | None = None, record_2d: bool = False,
                    verbose: bool = False) -> Extractor:
    """Build (and load the model of) an extractor of ``kind``.

    Args:
        kind: ``metrabs`` or ``mediapipe`` (:data:`EXTRACTOR_KINDS`).
        skeletons: conventions to extract (names, skeleton file paths or Skeletons); None: the
            kind's defaults.  Checked with :func:`resolve_conventions`.
        max_persons: person slots M (MeTRAbs keeps ``M + 2`` boxes per frame unless ``max_detections``).
        pose_model: MeTRAbs SavedModel URL or directory (default: the 28-dataset EfficientNetV2-L model).
        fov: MeTRAbs field of view in degrees (default 55) when ``intrinsics`` is None.
        intrinsics: MeTRAbs ``(3, 3)`` camera matrix, or the path of its JSON file.
        num_aug, max_detections, detector_threshold, internal_batch_size: MeTRAbs options
            (None: :class:`~msclr.extractors.metrabs.MetrabsOptions`' defaults).
        record_2d: keep what drawing the skeletons on the video needs (MediaPipe: its image
            landmarks; MeTRAbs projects its 3D joints and needs nothing more).
        verbose: keep the backend's native log output (TensorFlow's C++ / absl / Python logs,
            MediaPipe's glog); default quiet.

    Options a kind does not use are ignored; call :func:`check_options` first to refuse them.

    Raises:
        MsclrError: unknown kind or convention (ExtractionError: the model cannot be loaded).
    """
    skels = resolve_conventions(kind, skeletons)
    if kind == "mediapipe":
        from msclr.extractors.mediapipe_pose import MediaPipeExtractor

        return MediaPipeExtractor(record_2d=record_2d, verbose=verbose)
    from msclr.extractors.axes import load_intrinsics
    from msclr.extractors.metrabs import DEFAULT_MODEL_URL, MetrabsExtractor, MetrabsOptions

    given = dict(fov=fov, num_aug=num_aug, detector_threshold=detector_threshold,
                 internal_batch_size=internal_batch_size,
                 intrinsics=load_intrinsics(intrinsics) if isinstance(intrinsics, str | Path) else intrinsics,
                 max_detections=max_persons + 2 if max_detections is None else max_detections)
    options = replace(MetrabsOptions(), **{k: v for k, v in given.items() if v is not None})
    return MetrabsExtractor(pose_model or DEFAULT_MODEL_URL, skels, options, verbose=verbose)


def extractor_factory(kind: str, skeletons: Sequence[str | Skeleton] | None = None, *, max_persons: int = 2,
                      **options: Any) -> Callable[[], Extractor]:
    """A zero-argument builder for :func:`msclr.pipeline.extract.extract_videos` (which loads the
    model only when some video needs it).  Checks now what can fail before the long model load:
    the kind, the conventions, an intrinsics file.

    ``options``: the keyword options of :func:`build_extractor` (ignored where the kind does not
    use them, as there; refuse the ones the user gave with :func:`check_options`).
    """
    unknown = sorted(set(options) - set(METRABS_OPTIONS) - set(COMMON_OPTIONS))
    if unknown:
        raise TypeError(f"extractor_factory() got unknown options {unknown}")
    skels = resolve_conventions(kind, skeletons)
    intrinsics = options.get("intrinsics")
    if isinstance(intrinsics, str | Path):
        from msclr.extractors.axes import load_intrinsics

        options["intrinsics"] = load_intrinsics(intrinsics)
    return functools.partial(build_extractor, kind, skels, max_persons=max_persons, **options)


# ---------------------------------------------------------------- serving a trained run
SERVED_BY: dict[str, str] = {"ntu_kinect_25": "kinectv2_25"}
"""model convention -> extracted convention fed in its place (same joint order index by index; see docs/method.md, "kinectv2_25 serves ntu_kinect_25")."""



def substitute_compatible(model: Skeleton, data: Skeleton) -> bool:
    """True when ``data``'s arrays can be fed to a model trained on ``model`` index for index
    (same joint count and the same left/right flip permutation)."""
    return model.num_joints == data.num_joints and tuple(model.flip) == tuple(data.flip)


def _known_to_produce(kind: str, convention: str) -> bool:
    """``kind`` produces ``convention`` for certain: a built-in convention it can produce (a user-defined one is
    produced by MeTRAbs only if its pose model happens to hold a skeleton of that name, which is unknown here)."""
    from msclr.skeletons import SKELETONS

    return convention in SKELETONS and can_produce(kind, convention)


def serving_plan(conventions: Sequence[str], extractor: str) -> dict[str, str]:
    """model convention -> convention to extract for it (itself, or :data:`SERVED_BY`'s substitute).

    Raises:
        MsclrError: a convention the extractor cannot produce (the message says which extractor
            produces what, and which one the run needs; when none is known to produce it from video,
            it points to classifying stored skeletons with ``msclr predict --from-cache``).
    """
    plan: dict[str, str] = {}
    missing: list[str] = []
    for conv in conventions:
        if can_produce(extractor, conv):
            plan[conv] = conv
        elif conv in SERVED_BY and can_produce(extractor, SERVED_BY[conv]):
            plan[conv] = SERVED_BY[conv]
        else:
            missing.append(conv)
    if missing:
        other = [e for e in EXTRACTOR_KINDS if e != extractor and all(
            _known_to_produce(e, c) or (c in SERVED_BY and _known_to_produce(e, SERVED_BY[c])) for c in conventions)]
        produces = describe_outputs({"metrabs": "ntu_kinect_25 via kinectv2_25"})
        hint = (f"use --extractor {other[0]}" if other else
                f"no extractor produces {', '.join(missing)} from video; classify stored skeletons "
                "instead: msclr predict --model RUN --from-cache CACHE --clip NAME (or --from-pyskl FILE --clip "
                "NAME), or train a run on conventions an extractor produces")
        raise MsclrError(f"the run was trained on {', '.join(conventions)}, but --extractor {extractor} cannot "
                         f"produce {', '.join(missing)}. Extractors produce: {produces}. Fix: {hint}.")
    return plan


__all__ = [
    "SERVED_BY",
    "serving_plan",
    "substitute_compatible",
    "COMMON_OPTIONS",
    "DEFAULT_EXTRACTOR",
    "EXTRACTORS",
    "EXTRACTOR_KINDS",
    "MEDIAPIPE_CONVENTIONS",
    "METRABS_CONVENTIONS",
    "METRABS_OPTIONS",
    "NOT_FROM_VIDEO",
    "ExtractorSpec",
    "build_extractor",
    "can_produce",
    "check_options",
    "default_conventions",
    "describe_outputs",
    "extractor_factory",
    "get_extractor_spec",
]
