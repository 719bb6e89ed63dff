"""A small synthetic multi-skeleton action set for ``msclr demo`` and tests.

**These data are synthetic**: procedural motions of a few action classes performed by a
parametric stick body, not recordings of people.  They exist so that the whole pipeline
(cache -> pretraining -> linear evaluation -> ensemble -> prediction) can run offline on a
CPU in minutes, and so that tests have labelled multi-skeleton data with known structure.

How a sample is made:

1. A rest pose of the SMPL body (``smpl_24`` joints) is scaled by a random body size.
2. The action's motion is written as joint angles and offsets over a phase ``phi`` in
   [0, 1) that advances ``repetitions`` times over the clip (random speed, amplitude,
   phase offset and duration per sample).
3. The pose is turned by a random yaw about the vertical axis, placed about 3 m in front
   of the camera and sprinkled with Gaussian noise (1 cm).
4. The same motion is *rendered* in every requested convention: ``smpl_24`` directly,
   NTU's Kinect layouts (``ntu_kinect_25``, ``kinectv2_25``) through a fixed joint map
   (spine points interpolated, hand tips and thumbs extrapolated from the forearm), so the
   two conventions see the same clip with different joint sets, like MeTRAbs' outputs.

Coordinates: metres, Kinect camera space (x towards the camera's left, y up, z away from
the camera); the subject faces the camera, so its left shoulder has the smaller x.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from msclr.skeletons import get_skeleton

ACTIONS: tuple[str, ...] = (
    "wave right hand",
    "raise both arms",
    "squat",
    "kick with right leg",
    "clap hands",
    "bow",
)
"""Class names in label order."""

SUPPORTED_CONVENTIONS: tuple[str, ...] = ("smpl_24", "ntu_kinect_25", "kinectv2_25")

# Rest pose of smpl_24, metres, relative to the pelvis; x = subject's right (camera's left),
# y up, z towards the subject's back (away from the camera).
_REST = {
    "pelv": (0.0, 0.0, 0.0), "lhip": (-0.09, -0.07, 0.0), "rhip": (0.09, -0.07, 0.0),
    "spi1": (0.0, 0.11, 0.0), "lkne": (-0.10, -0.50, 0.0), "rkne": (0.10, -0.50, 0.0),
    "spi2": (0.0, 0.24, 0.0), "lank": (-0.10, -0.90, 0.02), "rank": (0.10, -0.90, 0.02),
    "spi3": (0.0, 0.38, 0.0), "ltoe": (-0.10, -0.95, -0.12), "rtoe": (0.10, -0.95, -0.12),
    "neck": (0.0, 0.58, 0.0), "lcla": (-0.07, 0.50, 0.0), "rcla": (0.07, 0.50, 0.0),
    "head": (0.0, 0.72, -0.03), "lsho": (-0.18, 0.50, 0.0), "rsho": (0.18, 0.50, 0.0),
}
_UPPER_ARM, _FOREARM, _HAND = 0.28, 0.25, 0.08
_THIGH, _SHIN = 0.43, 0.40


@dataclass(frozen=True)
class SyntheticSample:
    """One synthetic clip: ``poses[convention]`` is (T, 1, V, 3) float32 metres."""

    name: str
    label: int
    subject: int
    poses: dict[str, np.ndarray]


def _direction(elevation: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    """Unit vectors (T, 3): elevation from straight down (0) to straight up (pi); azimuth 0 points
    sideways outwards (+x for the right side), pi/2 forwards (towards the camera, -z)."""
    s = np.sin(elevation)
    return np.stack([s * np.cos(azimuth), -np.cos(elevation), -s * np.sin(azimuth)], axis=-1)


def _bend_forward(points: np.ndarray, angle: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """Rotate (T, J, 3) points about the x axis through ``pivot`` (T, 3) so that points above the
    pivot move towards the camera (-z) for a positive ``angle`` (T,) in radians."""
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    rel = points - pivot[:, None]
    out = rel.copy()
    out[..., 1] = c * rel[..., 1] + s * rel[..., 2]
    out[..., 2] = -s * rel[..., 1] + c * rel[..., 2]
    return out + pivot[:, None]


def _arm(shoulder: np.ndarray, side: float, up_el, up_az, fore_el, fore_az) -> tuple[np.ndarray, ...]:
    """Elbow, wrist, hand (T, 3) from angle tracks; ``side`` = +1 right arm, -1 left arm."""
    def d(el, az):
        v = _direction(el, az)
        v[..., 0] *= side
        return v

    elbow = shoulder + _UPPER_ARM * d(up_el, up_az)
    forearm = d(fore_el, fore_az)
    wrist = elbow + _FOREARM * forearm
    hand = wrist + _HAND * forearm
    return elbow, wrist, hand


def _smpl_motion(action: int, phi: np.ndarray, amp: float, rng: np.random.Generator) -> np.ndarray:
    """(T, 24, 3) smpl_24 joints relative to the pelvis rest position, one action."""
    skeleton = get_skeleton("smpl_24")
    t_len = phi.shape[0]
    joints = np.zeros((t_len, 24, 3))
    for name, pos in _REST.items():
        joints[:, skeleton.index(name)] = pos
    wave = np.sin(2 * np.pi * phi)
    bump = 0.5 - 0.5 * np.cos(2 * np.pi * phi)  # 0 -> 1 -> 0 per repetition
    zero = np.zeros(t_len)
    arm = {side: [np.full(t_len, 0.15), zero, np.full(t_len, 0.2), np.full(t_len, 0.4)]
           for side in ("l", "r")}
    pelvis_drop = zero.copy()
    knee_forward = zero.copy()
    bend = zero.copy()
    kick = zero.copy()
    if action == 0:  # wave right hand: upper arm out to the side, forearm up, swinging
        arm["r"] = [np.full(t_len, 1.45 * amp), np.full(t_len, 0.2), np.full(t_len, 2.6) + 0.45 * amp * wave,
                    np.full(t_len, 0.1)]
    elif action == 1:  # raise both arms overhead and back down
        for side in ("l", "r"):
            arm[side] = [0.15 + 2.7 * amp * bump, np.full(t_len, 0.3), 0.2 + 2.8 * amp * bump,
                         np.full(t_len, 0.3)]
    elif action == 2:  # squat
        pelvis_drop = 0.38 * amp * bump
        knee_forward = 0.30 * amp * bump
        bend = 0.35 * amp * bump
        for side in ("l", "r"):
            arm[side] = [0.15 + 1.3 * amp * bump, np.full(t_len, 1.5), 0.2 + 1.3 * amp * bump,
                         np.full(t_len, 1.5)]
    elif action == 3:  # kick with the right leg
        kick = 1.2 * amp * bump
    elif action == 4:  # clap: hands meet in front of the chest
        close = 0.5 + 0.5 * np.cos(4 * np.pi * phi)
        for side in ("l", "r"):
            arm[side] = [np.full(t_len, 1.1), 0.9 + 0.6 * amp * close, np.full(t_len, 1.5),
                         1.5 + 0.5 * amp * close]
    elif action == 5:  # bow
        bend = 1.0 * amp * bump
    else:
        raise ValueError(f"unknown synthetic action {action}")

    # Legs (squat bends the knees forwards; kick swings the right leg forwards).
    for side in ("l", "r"):
        hip = joints[:, skeleton.index(f"{side}hip")].copy()
        hip[:, 1] -= pelvis_drop
        ankle = joints[:, skeleton.index(f"{side}ank")].copy()
        knee = 0.5 * (hip + ankle)
        knee[:, 2] -= knee_forward
        if side == "r":
            knee = hip + _THIGH * _direction(kick * 0.8, np.full(t_len, np.pi / 2))
            ankle = knee + _SHIN * _direction(kick * 0.9 + 0.0, np.full(t_len, np.pi / 2))
        joints[:, skeleton.index(f"{side}hip")] = hip
        joints[:, skeleton.index(f"{side}kne")] = knee
        joints[:, skeleton.index(f"{side}ank")] = ankle
        joints[:, skeleton.index(f"{side}toe")] = ankle + np.array([0.0, -0.05, -0.14])
    # Upper body: every joint above the pelvis drops with it.
    upper = [skeleton.index(n) for n in ("pelv", "spi1", "spi2", "spi3", "neck", "lcla", "rcla", "head",
                                         "lsho", "rsho")]
    joints[:, upper, 1] -= pelvis_drop[:, None]
    for side, sign in (("l", -1.0), ("r", 1.0)):
        shoulder = joints[:, skeleton.index(f"{side}sho")]
        up_el, up_az, fore_el, fore_az = arm[side]
        elbow, wrist, hand = _arm(shoulder, sign, up_el, up_az, fore_el, fore_az)
        joints[:, skeleton.index(f"{side}elb")] = elbow
        joints[:, skeleton.index(f"{side}wri")] = wrist
        joints[:, skeleton.index(f"{side}han")] = hand
    # Bend the trunk forwards about the pelvis (arms move with it).
    trunk = upper[1:] + [skeleton.index(f"{s}{j}") for s in "lr" for j in ("elb", "wri", "han")]
    pivot = joints[:, skeleton.index("pelv")]
    joints[:, trunk] = _bend_forward(joints[:, trunk], bend, pivot)
    return joints


def _to_convention(smpl: np.ndarray, convention: str) -> np.ndarray:
    """Map (T, 24, 3) smpl_24 joints to another convention's joints (T, V, 3)."""
    if convention == "smpl_24":
        return smpl
    s = get_skeleton("smpl_24")

    def j(name: str) -> np.ndarray:
        return smpl[:, s.index(name)]

    target = get_skeleton(convention)
    if convention not in ("ntu_kinect_25", "kinectv2_25"):
        raise ValueError(f"synthetic data cannot be rendered in {convention!r}; use one of {SUPPORTED_CONVENTIONS}")
    by_meaning = {
        0: j("pelv") + 0.5 * (j("spi1") - j("pelv")), 1: j("spi2"), 2: j("neck"), 3: j("head"),
        4: j("lsho"), 5: j("lelb"), 6: j("lwri"), 7: j("lhan"), 8: j("rsho"), 9: j("relb"),
        10: j("rwri"), 11: j("rhan"), 12: j("lhip"), 13: j("lkne"), 14: j("lank"), 15: j("ltoe"),
        16: j("rhip"), 17: j("rkne"), 18: j("rank"), 19: j("rtoe"), 20: 0.5 * (j("spi3") + j("neck")),
        21: j("lhan") + 0.6 * (j("lhan") - j("lwri")), 22: j("lhan") + np.array([0.03, 0.0, -0.03]),
        23: j("rhan") + 0.6 * (j("rhan") - j("rwri")), 24: j("rhan") + np.array([-0.03, 0.0, -0.03]),
    }
    return np.stack([by_meaning[v] for v in range(target.num_joints)], axis=1)


def make_sample(
    action: int, subject: int, index: int, rng: np.random.Generator, conventions: Sequence[str]
) -> SyntheticSample:
    """One synthetic clip of ``action`` by synthetic subject ``subject``."""
    frames = int(rng.integers(40, 91))
    repetitions = float(rng.uniform(1.0, 2.5))
    phase = float(rng.uniform(0.0, 1.0))
    phi = (phase + repetitions * np.arange(frames) / frames) % 1.0
    amp = float(rng.uniform(0.75, 1.15))
    scale = float(rng.uniform(0.85, 1.15))
    yaw = float(rng.uniform(-0.5, 0.5))
    origin = np.array([rng.uniform(-0.5, 0.5), 0.95 * scale - 0.2, rng.uniform(2.5, 3.5)])
    smpl = _smpl_motion(action, phi, amp, rng) * scale
    c, s = np.cos(yaw), np.sin(yaw)
    rotation = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    poses = {}
    for convention in conventions:
        joints = _to_convention(smpl, convention) @ rotation.T + origin
        joints = joints + rng.normal(0.0, 0.01, size=joints.shape)
        poses[convention] = joints[:, None].astype(np.float32)
    return SyntheticSample(f"synth_a{action:02d}_s{subject:02d}_{index:03d}", action, subject, poses)


def make_dataset(
    conventions: Sequence[str] = ("ntu_kinect_25", "smpl_24"),
    *,
    samples_per_class: int = 40,
    subjects: int = 8,
    seed: int = 0,
) -> list[SyntheticSample]:
    """``len(ACTIONS) * samples_per_class`` clips, subjects assigned round-robin.

    Splits by subject like NTU's cross-subject protocol: odd subjects train, even subjects test
    (see :func:`subject_splits`).
    """
    for convention in conventions:
        if convention not in SUPPORTED_CONVENTIONS:
            raise ValueError(f"synthetic data cannot be rendered in {convention!r}; use one of {SUPPORTED_CONVENTIONS}")
    rng = np.random.default_rng(seed)
    out = []
    for action in range(len(ACTIONS)):
        for i in range(samples_per_class):
            out.append(make_sample(action, 1 + i % subjects, i, rng, conventions))
    return out


def subject_splits(samples: Sequence[SyntheticSample]) -> dict[str, list[str]]:
    """``xsub_train`` = odd subjects, ``xsub_val`` = even subjects."""
    return {
        "xsub_train": [s.name for s in samples if s.subject % 2 == 1],
        "xsub_val": [s.name for s in samples if s.subject % 2 == 0],
    }
