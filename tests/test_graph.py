"""ST-GCN spatial partition: the reference's unit-test values (docs/method.md, "Spatial partition")."""

from __future__ import annotations

import numpy as np
import pytest

from msclr.models.graph import hop_distance, normalize_digraph, skeleton_partition, spatial_partition
from msclr.skeletons import SKELETONS

# (layout, sums of A[0..2], non-zeros of A[0..2]) from docs/method.md, "Spatial partition" (reference algorithm and edge lists).
REFERENCE_VALUES = {
    "ntu_kinect_25": ((8.95, 13.3, 2.75), (25, 40, 8)),
    "smpl_24": ((8.616667, 12.55, 2.833333), (24, 38, 8)),
    "smplx_42": ((16.766667, 22.566667, 2.666667), (42, 70, 8)),
}


@pytest.mark.parametrize("name", list(REFERENCE_VALUES))
def test_partition_values_of_the_msclr_layouts(name: str) -> None:
    sums, nnz = REFERENCE_VALUES[name]
    a = skeleton_partition(name)
    v = SKELETONS[name].num_joints
    assert a.shape == (3, v, v) and a.dtype == np.float32
    np.testing.assert_allclose(a.sum(axis=(1, 2)), sums, rtol=0, atol=1e-5)
    assert (a != 0).sum(axis=(1, 2)).tolist() == list(nnz)


def test_berkeley_reference_graph_values_on_model_edges() -> None:
    # The reference's Berkeley graph is the model's drawing graph (not a tree); msclr keeps it as model_edges.
    s = SKELETONS["berkeley_mhad_43"]
    assert len(s.model_edges) == 42
    a = spatial_partition(s.num_joints, s.model_edges, s.centre)
    np.testing.assert_allclose(a.sum(axis=(1, 2)), (15.566667, 25.766667, 1.666667), rtol=0, atol=1e-5)
    assert (a != 0).sum(axis=(1, 2)).tolist() == [43, 79, 5]


def test_smplx_graph_is_the_39_edge_reference_graph() -> None:
    s = SKELETONS["smplx_42"]
    assert len(s.edges) == 39
    model = {frozenset(e) for e in s.model_edges}
    extra = {frozenset(e) for e in s.edges} - model
    assert extra == {frozenset(e) for e in [(20, 25), (20, 38), (20, 39), (21, 26), (21, 40), (21, 41)]}
    a = skeleton_partition(s)
    for eye in (23, 24):  # isolated: only the self-loop
        assert a[0, eye, eye] == 1.0 and a[:, eye].sum() == 1.0 and a[:, :, eye].sum() == 1.0


def test_ntu_spot_values() -> None:
    a = skeleton_partition("ntu_kinect_25")
    np.testing.assert_allclose(np.diag(a[0])[:5], [0.25, 0.3333, 0.3333, 0.5, 0.3333], atol=1e-4)
    np.testing.assert_allclose(a[0][20, 20], 0.2, atol=1e-6)


@pytest.mark.parametrize("name", list(SKELETONS))
def test_partition_is_column_normalised_and_graph_shaped(name: str) -> None:
    s = SKELETONS[name]
    a = skeleton_partition(s).astype(np.float64)
    np.testing.assert_allclose(a.sum(axis=(0, 1)), 1.0, atol=1e-6)  # each column of A sums to one
    support = (a.sum(axis=0) != 0)
    expected = np.eye(s.num_joints, dtype=bool)
    for i, j in s.edges:
        expected[i, j] = expected[j, i] = True
    np.testing.assert_array_equal(support, expected)
    assert np.all(a >= 0)


def test_hop_distance_and_normalisation() -> None:
    hop = hop_distance(4, [(0, 1), (1, 2)])
    assert hop[0, 0] == 0 and hop[0, 1] == 1 and np.isinf(hop[0, 2]) and np.isinf(hop[3, 0])
    hop2 = hop_distance(4, [(0, 1), (1, 2)], max_hop=2)
    assert hop2[0, 2] == 2 and np.isinf(hop2[0, 3])
    norm = normalize_digraph(np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(norm, [[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 0]])  # empty column stays zero
