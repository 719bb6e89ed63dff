"""The built-in skeleton conventions as data: joints, edges, centre, flip, shoulders.

Each :class:`Layout` is turned into a validated :class:`msclr.skeletons.Skeleton` by the registry
(``msclr.skeletons.SKELETONS``).  Edges are written ``(child, parent)``.  Joint orders are those of
the sources named in each layout's ``source`` (the MeTRAbs models' own joint-name tables, MediaPipe's
landmark list, the Kinect SDK as NTU RGB+D and UTD-MHAD store it); the graphs are those of ST-GCN and
MS-CLR.  Where msclr departs from those sources:

- ``smpl_24`` uses a corrected flip: MS-CLR's flip table for it leaves the two hands (22, 23)
  unswapped, although every other left/right pair is swapped.
- ``smplx_42``: the two eye points 23 / 24 have no edge in MS-CLR's 39-edge graph; they are declared
  ``isolated`` (self-loop only, zero bone), which keeps the ST-GCN adjacency values of that graph.
- ``berkeley_mhad_43``: MS-CLR's graph for these mocap markers has three components and two cycles,
  so its arms and head never reach the centre and its bones are ill-defined.  msclr uses a connected
  tree rooted at ``bell`` (8): ``chest``, ``backl``, ``lside`` and ``rside`` hang from ``bell``; the
  head markers and both shoulder chains hang from ``chest``; the back markers from ``backl``; each
  hip cluster from its side marker.  The model's drawing graph is kept in ``model_edges`` (it
  reproduces MS-CLR's adjacency values).
- ``blazepose_33`` (no spine joints): the nose (0) is the only landmark the flip fixes, so it is the
  centre; shoulders and mouth corners hang from it, hips from the shoulders; the hand and foot
  triangles and the shoulder/hip quadrilateral are opened into chains.
- ``kinect_v1_20`` has no published centre or flip: centre ``shoulder_center`` (1, the analogue of
  NTU's SpineShoulder), flip derived from the joint names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Edge = tuple[int, int]


@dataclass(frozen=True)
class Layout:
    """One built-in convention as plain data (see :class:`msclr.skeletons.Skeleton` for the fields);
    ``flip=None`` means "derive the mirror permutation from the joint names"."""

    name: str
    joints: tuple[str, ...]
    edges: tuple[Edge, ...]
    centre: int
    flip: tuple[int, ...] | None
    shoulders: tuple[int, int] | None
    isolated: tuple[int, ...] = ()
    model_edges: tuple[Edge, ...] = ()
    source: str = ""
    description: str = ""


def _pairs(pairs: Iterable[Edge]) -> tuple[Edge, ...]:
    return tuple((int(a), int(b)) for a, b in pairs)


# --------------------------------------------------------------------------- NTU / Kinect v2
NTU_JOINTS = (
    "SpineBase", "SpineMid", "Neck", "Head", "ShoulderLeft", "ElbowLeft", "WristLeft", "HandLeft",
    "ShoulderRight", "ElbowRight", "WristRight", "HandRight", "HipLeft", "KneeLeft", "AnkleLeft",
    "FootLeft", "HipRight", "KneeRight", "AnkleRight", "FootRight", "SpineShoulder", "HandTipLeft",
    "ThumbLeft", "HandTipRight", "ThumbRight",
)
# ST-GCN 'ntu-rgb+d' layout (child, parent), as MS-CLR / AimCLR / CrosSCLR use it.
NTU_EDGES = _pairs([
    (0, 1), (1, 20), (2, 20), (3, 2), (4, 20), (5, 4), (6, 5), (7, 6), (8, 20), (9, 8), (10, 9), (11, 10),
    (12, 0), (13, 12), (14, 13), (15, 14), (16, 0), (17, 16), (18, 17), (19, 18), (21, 22), (22, 7),
    (23, 24), (24, 11),
])
NTU_FLIP = (0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 20, 23, 24, 21, 22)

KINECTV2_JOINTS = (
    "spinebase", "spinemid", "neck", "head", "lsho", "lelb", "lwri", "lhan", "rsho", "relb", "rwri",
    "rhan", "lhip", "lkne", "lank", "lfoo", "rhip", "rkne", "rank", "rfoo", "spineshoulder",
    "lhandtip", "lthu", "rhandtip", "rthu",
)
# MeTRAbs model attribute order: hand tips on the hands, thumbs on the wrists.
KINECTV2_MODEL_EDGES = _pairs([
    (2, 3), (2, 20), (1, 20), (0, 1), (0, 16), (0, 12), (16, 17), (12, 13), (17, 18), (13, 14), (18, 19),
    (14, 15), (8, 20), (4, 20), (8, 9), (4, 5), (9, 10), (5, 6), (10, 24), (6, 22), (10, 11), (6, 7),
    (11, 23), (7, 21),
])

# --------------------------------------------------------------------------- SMPL / SMPL-X
SMPL_JOINTS = (
    "pelv", "lhip", "rhip", "spi1", "lkne", "rkne", "spi2", "lank", "rank", "spi3", "ltoe", "rtoe",
    "neck", "lcla", "rcla", "head", "lsho", "rsho", "lelb", "relb", "lwri", "rwri", "lhan", "rhan",
)
SMPL_EDGES = _pairs([
    (0, 3), (3, 6), (6, 9), (12, 9), (15, 12), (1, 0), (4, 1), (7, 4), (10, 7), (2, 0), (5, 2), (8, 5),
    (11, 8), (13, 9), (16, 13), (18, 16), (20, 18), (22, 20), (14, 9), (17, 14), (19, 17), (21, 19),
    (23, 21),
])
SMPL_MODEL_EDGES = _pairs([
    (1, 4), (1, 0), (2, 5), (2, 0), (3, 6), (3, 0), (4, 7), (5, 8), (6, 9), (7, 10), (8, 11), (9, 12),
    (9, 13), (9, 14), (12, 15), (13, 16), (14, 17), (16, 18), (17, 19), (18, 20), (19, 21), (20, 22),
    (21, 23),
])
# Corrected: MS-CLR's flip leaves the hands (22, 23) unswapped.
SMPL_FLIP = (0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22)

SMPLX_JOINTS = (
    "pelv", "lhip", "rhip", "bell", "lkne", "rkne", "spin", "lank", "rank", "thor", "ltoe", "rtoe",
    "neck", "lcla", "rcla", "head", "lsho", "rsho", "lelb", "relb", "lwri", "rwri", "jaw", "leyehf",
    "reyehf", "lmiddle1", "rmiddle1", "nose", "reye", "leye", "rear", "lear", "lto2", "lto3", "lhee",
    "rto2", "rto3", "rhee", "lthu", "lmiddle", "rthu", "rmiddle",
)
# MS-CLR's 39-edge graph: the 33 model edges plus 6 hand edges; eye points 23 / 24 isolated.
SMPLX_EDGES = _pairs([
    (6, 9), (3, 6), (0, 3), (1, 0), (4, 1), (7, 4), (34, 7), (10, 7), (32, 10), (33, 10), (2, 0), (5, 2),
    (8, 5), (37, 8), (11, 8), (35, 11), (36, 11), (13, 9), (16, 13), (18, 16), (20, 18), (25, 20),
    (38, 20), (39, 20), (14, 9), (17, 14), (19, 17), (21, 19), (26, 21), (40, 21), (41, 21), (12, 9),
    (22, 12), (15, 22), (27, 15), (29, 27), (31, 29), (28, 27), (30, 28),
])
SMPLX_MODEL_EDGES = _pairs([
    (0, 1), (0, 2), (0, 3), (1, 4), (2, 5), (3, 6), (4, 7), (5, 8), (6, 9), (7, 10), (7, 34), (8, 11),
    (8, 37), (9, 12), (9, 13), (9, 14), (10, 32), (10, 33), (11, 35), (11, 36), (12, 22), (13, 16),
    (14, 17), (15, 22), (15, 27), (16, 18), (17, 19), (18, 20), (19, 21), (27, 28), (27, 29), (28, 30),
    (29, 31),
])
SMPLX_FLIP = (
    0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 22, 24, 23, 26, 25, 27,
    29, 28, 31, 30, 35, 36, 37, 32, 33, 34, 40, 41, 38, 39,
)

# --------------------------------------------------------------------------- Berkeley MHAD markers
BERKELEY_JOINTS = (
    "head", "lhead", "rhead", "rback", "backl", "backt", "lback", "lside", "bell", "chest", "rside",
    "lsho1", "lsho2", "larm", "lelb", "lwri", "lhan1", "lhan2", "lhan3", "rsho1", "rsho2", "rarm", "relb",
    "rwri", "rhan1", "rhan2", "rhan3", "lhipb", "lhipf", "lhipl", "lleg", "lkne", "lank", "lhee", "lfoo",
    "rhipb", "rhipf", "rhipl", "rleg", "rkne", "rank", "rhee", "rfoo",
)
# msclr's connected tree rooted at bell (8); see the module docstring.
BERKELEY_EDGES = _pairs([
    (9, 8), (4, 8), (7, 8), (10, 8),
    (5, 4), (3, 4), (6, 4),
    (0, 9), (1, 0), (2, 0),
    (11, 9), (12, 11), (13, 12), (14, 13), (15, 14), (16, 15), (17, 15), (18, 15),
    (19, 9), (20, 19), (21, 20), (22, 21), (23, 22), (24, 23), (25, 23), (26, 23),
    (28, 7), (29, 28), (27, 29), (30, 28), (31, 30), (32, 31), (33, 32), (34, 33),
    (36, 10), (37, 36), (35, 37), (38, 36), (39, 38), (40, 39), (41, 40), (42, 41),
])
BERKELEY_MODEL_EDGES = _pairs([
    (0, 1), (0, 2), (3, 4), (3, 35), (4, 5), (4, 6), (6, 27), (7, 8), (7, 28), (8, 9), (8, 10), (10, 36),
    (11, 12), (11, 19), (12, 13), (13, 14), (14, 15), (15, 16), (15, 17), (15, 18), (19, 20), (20, 21),
    (21, 22), (22, 23), (23, 24), (23, 25), (23, 26), (27, 29), (27, 35), (28, 29), (28, 30), (30, 31),
    (31, 32), (32, 33), (33, 34), (35, 37), (36, 37), (36, 38), (38, 39), (39, 40), (40, 41), (41, 42),
])
BERKELEY_FLIP = (
    0, 2, 1, 6, 4, 5, 3, 10, 8, 9, 7,
    *range(19, 27), *range(11, 19), *range(35, 43), *range(27, 35),
)

# --------------------------------------------------------------------------- MediaPipe BlazePose
BLAZEPOSE_JOINTS = (
    "NOSE", "LEFT_EYE_INNER", "LEFT_EYE", "LEFT_EYE_OUTER", "RIGHT_EYE_INNER", "RIGHT_EYE",
    "RIGHT_EYE_OUTER", "LEFT_EAR", "RIGHT_EAR", "MOUTH_LEFT", "MOUTH_RIGHT", "LEFT_SHOULDER",
    "RIGHT_SHOULDER", "LEFT_ELBOW", "RIGHT_ELBOW", "LEFT_WRIST", "RIGHT_WRIST", "LEFT_PINKY",
    "RIGHT_PINKY", "LEFT_INDEX", "RIGHT_INDEX", "LEFT_THUMB", "RIGHT_THUMB", "LEFT_HIP", "RIGHT_HIP",
    "LEFT_KNEE", "RIGHT_KNEE", "LEFT_ANKLE", "RIGHT_ANKLE", "LEFT_HEEL", "RIGHT_HEEL",
    "LEFT_FOOT_INDEX", "RIGHT_FOOT_INDEX",
)
BLAZEPOSE_EDGES = _pairs([
    (1, 0), (2, 1), (3, 2), (7, 3), (4, 0), (5, 4), (6, 5), (8, 6), (9, 0), (10, 0),
    (11, 0), (12, 0), (13, 11), (15, 13), (17, 15), (19, 15), (21, 15), (14, 12), (16, 14), (18, 16),
    (20, 16), (22, 16), (23, 11), (25, 23), (27, 25), (29, 27), (31, 27), (24, 12), (26, 24), (28, 26),
    (30, 28), (32, 28),
])
BLAZEPOSE_MODEL_EDGES = _pairs([
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13), (13, 15),
    (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18), (16, 20), (16, 22), (18, 20),
    (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28), (27, 29), (28, 30), (29, 31),
    (30, 32), (27, 31), (28, 32),
])

# --------------------------------------------------------------------------- Kinect v1 (UTD-MHAD)
KINECT_V1_JOINTS = (
    "head", "shoulder_center", "spine", "hip_center", "left_shoulder", "left_elbow", "left_wrist",
    "left_hand", "right_shoulder", "right_elbow", "right_wrist", "right_hand", "left_hip", "left_knee",
    "left_ankle", "left_foot", "right_hip", "right_knee", "right_ankle", "right_foot",
)
KINECT_V1_EDGES = _pairs([
    (0, 1), (2, 1), (3, 2), (4, 1), (5, 4), (6, 5), (7, 6), (8, 1), (9, 8), (10, 9), (11, 10),
    (12, 3), (13, 12), (14, 13), (15, 14), (16, 3), (17, 16), (18, 17), (19, 18),
])

# --------------------------------------------------------------------------- the built-ins, in registry order
BUILTIN_LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "ntu_kinect_25", NTU_JOINTS, NTU_EDGES, 20, NTU_FLIP, (4, 8), model_edges=NTU_EDGES,
        source="NTU RGB+D Kinect v2 ground truth; ST-GCN 'ntu-rgb+d' layout (yysijie/st-gcn)",
        description="NTU RGB+D's native Kinect v2 skeleton (ST-GCN layout), metres",
    ),
    Layout(
        # Same tree as the Kinect SDK / MeTRAbs model edges, rooted at spineshoulder.
        "kinectv2_25", KINECTV2_JOINTS, KINECTV2_MODEL_EDGES, 20, NTU_FLIP, (4, 8),
        model_edges=KINECTV2_MODEL_EDGES,
        source="MeTRAbs 28-dataset models (kinectv2_25, affine-regressed on NTU Kinect data)",
        description="MeTRAbs' Kinect v2 skeleton estimate (NTU joint order by name)",
    ),
    Layout(
        "smpl_24", SMPL_JOINTS, SMPL_EDGES, 9, SMPL_FLIP, (16, 17), model_edges=SMPL_MODEL_EDGES,
        source="MeTRAbs smpl_24; MS-CLR graph (alvaroritter/AimCLR); corrected flip",
        description="SMPL body joints (MeTRAbs), centre spine3",
    ),
    Layout(
        "smplx_42", SMPLX_JOINTS, SMPLX_EDGES, 9, SMPLX_FLIP, (16, 17), isolated=(23, 24),
        model_edges=SMPLX_MODEL_EDGES,
        source="MeTRAbs smplx_42; MS-CLR 39-edge graph (alvaroritter/AimCLR)",
        description="SMPL-X body, face, feet and hand points (MeTRAbs), centre thorax",
    ),
    Layout(
        "berkeley_mhad_43", BERKELEY_JOINTS, BERKELEY_EDGES, 8, BERKELEY_FLIP, (11, 19),
        model_edges=BERKELEY_MODEL_EDGES,
        source="MeTRAbs berkeley_mhad_43 markers; msclr's connected tree (the reference graph is not one)",
        description="Berkeley MHAD mocap markers (MeTRAbs), centre belly",
    ),
    Layout(
        "blazepose_33", BLAZEPOSE_JOINTS, BLAZEPOSE_EDGES, 0, None, (11, 12),
        model_edges=BLAZEPOSE_MODEL_EDGES,
        source="MediaPipe BlazePose 33 landmarks (mediapipe 0.10.21); msclr tree rooted at the nose",
        description="MediaPipe BlazePose world landmarks, centre nose",
    ),
    Layout(
        "kinect_v1_20", KINECT_V1_JOINTS, KINECT_V1_EDGES, 1, None, (4, 8), model_edges=KINECT_V1_EDGES,
        source="Kinect v1 in UTD-MHAD joint order; tree from the joint names",
        description="Kinect v1 skeleton, UTD-MHAD joint order, centre shoulder_center",
    ),
)
"""Every built-in convention (``flip=None``: derived from the joint names)."""

ALIASES: dict[str, str] = {"ntu-rgb+d": "ntu_kinect_25", "ntu": "ntu_kinect_25", "kinect_v2_25": "kinectv2_25"}
"""Other names users may know a built-in by (ST-GCN and pyskl call NTU's layout ``ntu-rgb+d``)."""

__all__ = ["ALIASES", "BUILTIN_LAYOUTS", "Edge", "Layout"]
