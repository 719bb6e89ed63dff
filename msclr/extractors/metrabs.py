"""MeTRAbs (TensorFlow SavedModel) backend: every skeleton convention from one forward pass.

Loading (:func:`load_pose_model`): a URL goes through ``tensorflow_hub.load`` (downloads and unpacks
the ``.tar.gz`` once, cached under ``$TFHUB_CACHE_DIR``); a local directory (an unpacked SavedModel)
through ``tf.saved_model.load``.  GPU memory growth is switched on before loading (TensorFlow
otherwise takes the whole GPU).  TensorFlow is imported quietly unless ``verbose`` is set
(:mod:`msclr.extractors.tensorflow_env`).

Inference (:class:`MetrabsExtractor`): ``detect_poses_batched`` is called **once per frame batch
with** ``skeleton=''`` (all of the model's joints); each requested convention ``s`` is then sliced
out on the joint axis with the model's own ``per_skeleton_indices[s]``.  MeTRAbs applies the
skeleton argument as exactly such a gather on the joint axis, after detection, crop inference and
plausibility filtering on the full joint set (so the people returned do not depend on it), so the
result equals one call per skeleton at a quarter of the cost for four conventions.  (MS-CLR's own
extraction passed ``skeleton='smplx_42'`` and so ran the network once per convention.)  The camera
matrix is passed explicitly for every batch as ``[1, 3, 3]``: built from ``fov`` like MeTRAbs does for
unknown intrinsics, or given by the user (:meth:`MetrabsExtractor.camera_matrix`).

Joint names read from the model (``per_skeleton_joint_names[s]``) must equal the registry's
(:mod:`msclr.skeletons`); a mismatch raises :class:`~msclr.errors.ExtractionError` listing the
differing positions.  Outputs are converted at this boundary: millimetres, OpenCV camera axes ->
metres, Kinect axes (:func:`msclr.extractors.axes.metrabs_to_kinect`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msclr.errors import ExtractionError
from msclr.extractors.axes import DEFAULT_FOV_DEGREES, intrinsics_from_fov, metrabs_to_kinect
from msclr.extractors.base import FrameDetections, PersonCriterion
from msclr.extractors.registry import METRABS_CONVENTIONS
from msclr.extractors.tensorflow_env import import_tensorflow, import_tensorflow_hub, python_warnings_quiet
from msclr.skeletons import Skeleton, get_skeleton

log = logging.getLogger(__name__)

DEFAULT_MODEL_URL = (
    "https://omnomnom.vision.rwth-aachen.de/data/metrabs/metrabs_eff2l_y4_384px_800k_28ds.tar.gz"
)
"""The 28-dataset EfficientNetV2-L model (384 px crops, YOLOv4 detector); ~708 MB download.
Only the 28-dataset models carry smplx_42, berkeley_mhad_43 and kinectv2_25.  Non-commercial licence."""


def enable_memory_growth(*, verbose: bool = False) -> list[str]:
    """Switch on memory growth for every visible GPU (call before loading); returns their names."""
    tf = import_tensorflow(verbose=verbose)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: growth must be set before first use
            log.warning("could not enable memory growth on %s (TensorFlow already initialised it)", gpu.name)
    return [gpu.name for gpu in gpus]


def is_url(spec: str) -> bool:
    """True for ``http(s)://`` and ``gs://`` model locations."""
    return spec.startswith(("http://", "https://", "gs://"))


def load_pose_model(spec: str, *, verbose: bool = False) -> Any:
    """Load a MeTRAbs SavedModel from a URL (tensorflow_hub, cached) or an unpacked local directory.

    Args:
        spec: URL or directory.
        verbose: keep TensorFlow's C++ / absl / Python log output (default: quiet).

    Raises:
        ExtractionError: a path that is not a SavedModel directory, or a load failure (with the fix).
    """
    tf = import_tensorflow(verbose=verbose)
    enable_memory_growth(verbose=verbose)
    if is_url(spec):
        try:
            hub = import_tensorflow_hub(verbose=verbose)
        except ImportError as err:
            raise ExtractionError(
                f"loading {spec} needs tensorflow_hub ({err}); pip install tensorflow-hub tf-keras "
                "'setuptools<81', or download and unpack the archive and pass its directory to --pose-model"
            ) from None
        try:
            with python_warnings_quiet(verbose):
                return hub.load(spec)
        except Exception as err:  # noqa: BLE001 - network, archive and TF errors alike
            cache = os.environ.get("TFHUB_CACHE_DIR", "<tmp>/tfhub_modules")
            raise ExtractionError(
                f"cannot load the pose model from {spec}: {type(err).__name__}: {err}. Check the network, "
                f"or delete a partial download under TFHUB_CACHE_DIR ({cache}); offline, download and "
                "unpack the .tar.gz yourself and pass the directory to --pose-model"
            ) from None
    path = Path(spec).expanduser()
    if not path.exists():
        raise ExtractionError(f"pose model {spec} is neither a URL nor an existing directory; check --pose-model")
    if path.is_file():
        raise ExtractionError(
            f"pose model {spec} is a file; unpack it (mkdir model && tar -xzf {path.name} -C model) and pass "
            "the directory that holds saved_model.pb to --pose-model, or pass the model's URL"
        )
    if not (path / "saved_model.pb").is_file():
        raise ExtractionError(
            f"{path} holds no saved_model.pb: pass the unpacked MeTRAbs SavedModel directory to --pose-model"
        )
    try:
        with python_warnings_quiet(verbose):
            return tf.saved_model.load(str(path))
    except Exception as err:  # noqa: BLE001
        raise ExtractionError(
            f"TensorFlow {tf.__version__} cannot load the SavedModel {path}: {type(err).__name__}: {err}. "
            "'Unknown SavedObject type' means a TensorFlow older than the model; use a recent TF 2.x"
        ) from None


def _variable_dict_keys(table: Any) -> list[str]:
    try:
        return sorted(str(k) for k in table.keys())
    except AttributeError:
        return []


def model_joint_names(model: Any, convention: str) -> list[str]:
    """``per_skeleton_joint_names[convention]`` of a loaded model as Python strings."""
    names = model.per_skeleton_joint_names[convention]
    return [n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(names.numpy()).tolist()]


def check_model_conventions(model: Any, conventions: Sequence[str | Skeleton]) -> dict[str, np.ndarray]:
    """Verify the model's joint tables against the registry; return each convention's indices.

    Returns:
        convention -> ``(V,)`` int64 positions inside the ``skeleton=''`` output.

    Raises:
        ExtractionError: the model lacks an attribute or a convention, or its joint names differ from
            the registry's (the message lists every differing position).
    """
    for attr in ("detect_poses_batched", "per_skeleton_joint_names", "per_skeleton_indices"):
        if not hasattr(model, attr):
            raise ExtractionError(
                f"the pose model has no {attr!r}: it is not a MeTRAbs multi-person SavedModel; use a "
                "28-dataset MeTRAbs model (see msclr extract --help)"
            )
    available = _variable_dict_keys(model.per_skeleton_joint_names)
    indices: dict[str, np.ndarray] = {}
    for item in conventions:
        skel = get_skeleton(item)
        conv = skel.name
        try:
            names = model_joint_names(model, conv)
            idx = np.asarray(model.per_skeleton_indices[conv].numpy(), dtype=np.int64).reshape(-1)
        except (KeyError, ValueError, TypeError, AttributeError):
            raise ExtractionError(
                f"the pose model has no skeleton {conv!r}; it offers {', '.join(repr(a) for a in available)}. "
                "smplx_42, berkeley_mhad_43 and kinectv2_25 need a 28-dataset MeTRAbs model"
            ) from None
        expected = list(skel.joints)
        if names != expected or len(idx) != len(expected):
            diffs = [
                f"{i}: model {names[i] if i < len(names) else '-'!r} vs registry "
                f"{expected[i] if i < len(expected) else '-'!r}"
                for i in range(max(len(names), len(expected)))
                if (names[i] if i < len(names) else None) != (expected[i] if i < len(expected) else None)
            ]
            if len(idx) != len(expected):
                diffs.append(f"model has {len(idx)} indices for {len(expected)} registry joints")
            raise ExtractionError(
                f"joint names of skeleton {conv!r} in the pose model differ from msclr's registry "
                f"({len(names)} vs {len(expected)} joints): {'; '.join(diffs)}. Use a matching MeTRAbs model "
                "or define the convention in a skeleton file"
            )
        indices[conv] = idx
    return indices


def _ragged_to_numpy(rt: Any, total: int, tail: tuple[int, ...]) -> np.ndarray:
    """Flatten a ragged ``[N, None, *tail]`` tensor (or a dense ``[N, P, *tail]`` one) to ``(total, *tail)``;
    ``tail`` may hold one -1."""
    flat = rt.flat_values if hasattr(rt, "flat_values") else rt
    return np.asarray(flat.numpy() if hasattr(flat, "numpy") else flat).reshape(total, *tail)


@dataclass
class MetrabsOptions:
    """``detect_poses_batched`` arguments msclr exposes (MeTRAbs' defaults unless noted).

    Attributes:
        fov: field of view in degrees along the larger image side, used when ``intrinsics`` is None.
        intrinsics: ``(3, 3)`` camera matrix in pixels, or None.
        num_aug: test-time augmentations per person (1 is ~5x cheaper on the crop model).
        detector_threshold: person detector confidence threshold.
        detector_nms_iou_threshold: detector NMS IoU.
        max_detections: keep the top-k boxes per frame; -1 all.  msclr's default is M + 2: bounded work,
            with room for a bystander or a false box that tracking then drops.
        internal_batch_size: crops per inner step (0: one step).
        suppress_implausible_poses: MeTRAbs' bone-length / consistency filter.
        antialias_factor: crop supersampling.
    """

    fov: float = DEFAULT_FOV_DEGREES
    intrinsics: np.ndarray | None = None
    num_aug: int = 5
    detector_threshold: float = 0.3
    detector_nms_iou_threshold: float = 0.7
    max_detections: int = 4
    internal_batch_size: int = 64
    suppress_implausible_poses: bool = True
    antialias_factor: int = 1


@dataclass
class MetrabsExtractor:
    """MeTRAbs backend (see the module docstring).

    Args:
        model_spec: URL or local SavedModel directory (``model_id`` in the cache).
        conventions: registry names (or Skeletons, e.g. from a definition file) to extract; each
            must be a skeleton of the model with the same joint names.
        options: :class:`MetrabsOptions`.
        model: an already loaded model (tests; skips :func:`load_pose_model`).
        verbose: keep TensorFlow's log output (default: quiet; see :mod:`msclr.extractors.tensorflow_env`).
    """

    model_spec: str = DEFAULT_MODEL_URL
    conventions: Sequence[str | Skeleton] = METRABS_CONVENTIONS
    options: MetrabsOptions = field(default_factory=MetrabsOptions)
    model: Any = None
    name: str = "metrabs"
    person: PersonCriterion = field(default_factory=PersonCriterion)
    multi_person: bool = True
    verbose: bool = False

    def __post_init__(self) -> None:
        self.skeletons = {s.name: s for s in (get_skeleton(c) for c in self.conventions)}
        self.conventions = tuple(self.skeletons)
        if not self.conventions:
            raise ExtractionError("no skeleton convention requested; pass e.g. --skeletons smplx_42")
        self.person = PersonCriterion(min_score=self.options.detector_threshold, min_fraction=0.1)
        if self.model is None:
            self.model = load_pose_model(self.model_spec, verbose=self.verbose)
        self.model_id = self.model_spec
        self.indices = check_model_conventions(self.model, list(self.skeletons.values()))
        self.sizes = {c: len(i) for c, i in self.indices.items()}
        self._tf = import_tensorflow(verbose=self.verbose)
        self._intrinsics: np.ndarray | None = None
        self.calls = 0
        self.empty_batches = 0  # batches answered by the empty-batch gather error (see process)

    def describe(self) -> list[str]:
        tf = self._tf
        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
        device = ", ".join(gpus) if gpus else "CPU only (no GPU visible to TensorFlow: slow)"
        o = self.options
        camera = "intrinsics file" if o.intrinsics is not None else f"fov {o.fov:g} deg"
        return [
            f"MeTRAbs model {self.model_id}",
            f"TensorFlow {tf.__version__}; device: {device}",
            f"skeletons {', '.join(self.conventions)} from one pass per batch (skeleton='' + per_skeleton_indices)",
            f"{camera}, num_aug {o.num_aug}, detector threshold {o.detector_threshold:g}, "
            f"max detections {o.max_detections}, internal batch {o.internal_batch_size}",
        ]

    def camera_matrix(self, width: int, height: int) -> np.ndarray:
        """The ``(3, 3)`` pinhole intrinsics used for frames of this size: the user's matrix, or one
        built from ``fov`` (what MeTRAbs assumes for unknown intrinsics)."""
        o = self.options
        k = o.intrinsics if o.intrinsics is not None else intrinsics_from_fov(o.fov, width, height)
        return np.asarray(k, np.float64).reshape(3, 3)

    def start_video(self, width: int, height: int) -> None:
        self._intrinsics = self.camera_matrix(width, height).astype(np.float32).reshape(1, 3, 3)

    def process(self, frames: np.ndarray) -> list[FrameDetections]:
        """One ``detect_poses_batched`` call for the whole batch; slices every convention from it."""
        tf = self._tf
        if self._intrinsics is None:
            self.start_video(frames.shape[2], frames.shape[1])
        o = self.options
        try:
            out = self.model.detect_poses_batched(
                tf.constant(np.ascontiguousarray(frames, dtype=np.uint8)),
                intrinsic_matrix=tf.constant(self._intrinsics),
                skeleton="",
                num_aug=int(o.num_aug),
                detector_threshold=float(o.detector_threshold),
                detector_nms_iou_threshold=float(o.detector_nms_iou_threshold),
                max_detections=int(o.max_detections),
                internal_batch_size=int(o.internal_batch_size),
                suppress_implausible_poses=bool(o.suppress_implausible_poses),
                antialias_factor=int(o.antialias_factor),
            )
        except tf.errors.InvalidArgumentError as err:
            # MeTRAbs' _predict_empty (a batch without any detection) builds zeros with the crop
            # model's joint count and gathers the skeleton's indices from them; for skeleton=''
            # those exceed it, which TF on CPU reports as an out-of-range gather (on GPU it returns
            # zeros).  Such a batch has no person at all.
            if "indices" not in str(err) or "not in [0" not in str(err):
                raise
            self.calls += 1
            self.empty_batches += 1
            if self.empty_batches == 1:
                log.warning("MeTRAbs raised an out-of-range gather on a batch without detections "
                            "(its empty-batch path on CPU); treating such batches as empty")
            return [FrameDetections.empty(self.sizes) for _ in range(len(frames))]
        self.calls += 1
        boxes_rt, poses_rt = out["boxes"], out["poses3d"]
        if hasattr(boxes_rt, "row_lengths"):
            counts = np.asarray(boxes_rt.row_lengths().numpy(), dtype=np.int64)
        else:  # a dense batch (same person count everywhere)
            counts = np.full(len(frames), np.asarray(boxes_rt).shape[1], dtype=np.int64)
        if len(counts) != len(frames):
            raise ExtractionError(
                f"the pose model returned {len(counts)} rows of boxes for {len(frames)} frames; "
                "it does not behave like MeTRAbs' detect_poses_batched"
            )
        total = int(counts.sum())
        boxes = _ragged_to_numpy(boxes_rt, total, (5,)).astype(np.float32)
        poses_all = _ragged_to_numpy(poses_rt, total, (-1, 3)) if total else np.zeros((0, 0, 3), np.float32)
        per_conv = {c: metrabs_to_kinect(poses_all[:, idx, :]) if total
                    else np.zeros((0, len(idx), 3), np.float32) for c, idx in self.indices.items()}
        first = self.conventions[0]
        root_skel = self.skeletons[first]
        results = []
        start = 0
        for n in counts.tolist():
            sl = slice(start, start + n)
            start += n
            poses = {c: per_conv[c][sl] for c in self.conventions}
            results.append(FrameDetections(
                boxes=boxes[sl, :4].copy(),
                scores=boxes[sl, 4].copy(),
                poses=poses,
                roots=poses[first][:, root_skel.centre, :].copy(),
            ))
        return results

    def close(self) -> None:
        self.model = None


__all__ = [
    "DEFAULT_MODEL_URL",
    "METRABS_CONVENTIONS",
    "MetrabsExtractor",
    "MetrabsOptions",
    "check_model_conventions",
    "enable_memory_growth",
    "load_pose_model",
    "model_joint_names",
]
