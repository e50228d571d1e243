"""Euclidean distance on L2-normalised features = sqrt(2 - 2 cos), never squared."""

import numpy as np
import pytest
import torch

from maskreid.evaluate import euclidean_distance


def test_hand_values():
    q = np.array([[1.0, 0.0], [3.0, 4.0]], np.float32)
    g = np.array([[0.0, 2.0], [-1.0, 0.0], [0.6, 0.8]], np.float32)
    d = euclidean_distance(q, g).numpy()
    # orthogonal -> sqrt(2); opposite -> 2; identical direction -> 0
    np.testing.assert_allclose(d[0], [np.sqrt(2), 2.0, np.sqrt(2 - 2 * 0.6)], atol=1e-6)
    np.testing.assert_allclose(d[1, 2], 0.0, atol=1e-3)
    raw = euclidean_distance(q, g, normalize=False).numpy()
    np.testing.assert_allclose(raw, torch.cdist(torch.tensor(q), torch.tensor(g)).numpy(), atol=1e-5)


def test_chunked_equals_cos_formula():
    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((37, 8)), rng.standard_normal((50, 8))
    d = euclidean_distance(q, g, chunk=5, dtype=torch.float64).numpy()
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(d, np.sqrt(np.maximum(2 - 2 * qn @ gn.T, 0)), atol=1e-10)
    assert (euclidean_distance(q, q).diagonal() >= 0).all()


def test_dim_mismatch_raises():
    with pytest.raises(ValueError, match="dims differ"):
        euclidean_distance(np.ones((2, 3)), np.ones((2, 4)))
