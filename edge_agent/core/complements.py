"""Basket complements: what goes with the items being rung up, as an ONNX model.

Fitted on the site's recent orders (no person involved): with ``X`` the log-count order-item
matrix and ``V S`` its top right singular vectors scaled by their singular values, a basket
``x`` (1 per item in it) scores every item by ``x · (V S) · (V S)ᵀ``, the rank-limited
``x · Xᵀ X``: how often each item was bought together with the basket's items, with the noise of
rare pairs smoothed away. The graph's ``scores``
output is ``[1, items]`` (the registry's contract); the business rules drop what is already
in the basket.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_agent.core.nbr import Csr, baskets_to_csr, randomized_svd

RANK = 64


def fit(baskets: Sequence[Sequence[int]], n_items: int, rank: int = RANK) -> np.ndarray:
    """The item factors ``V S`` (``n_items x rank``) of these baskets."""
    counts = baskets_to_csr(baskets, n_items)
    logged = Csr(counts.indptr, counts.indices, np.log1p(counts.data), n_items)
    singular, factors = randomized_svd(logged, rank, power_iters=4, seed=0)
    return np.asarray(factors * singular[None, :].astype(np.float32), dtype=np.float32)


def graph(factors: np.ndarray) -> bytes:
    """The ONNX model ``scores = basket · F · Fᵀ`` for the factors ``F`` of `fit`."""
    n_items = factors.shape[0]
    model = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("MatMul", ["basket", "factors"], ["latent"]),
                helper.make_node("MatMul", ["latent", "factors_t"], ["scores"]),
            ],
            "complements",
            [helper.make_tensor_value_info("basket", TensorProto.FLOAT, [1, n_items])],
            [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, n_items])],
            [
                numpy_helper.from_array(np.ascontiguousarray(factors), "factors"),
                numpy_helper.from_array(np.ascontiguousarray(factors.T), "factors_t"),
            ],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data
