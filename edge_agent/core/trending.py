"""Trending at this site: what sells here now, as a tiny ONNX model.

Each item's score is its quantity sold in the site's recent orders, each order weighted by
``0.5 ** (age / half_life)``, so last week's best sellers lead and fade as they stop selling.
The scores are the model's only content; the graph outputs them as ``scores`` ``[1, items]``
(the registry's contract), so the staff screen serves trending through onnxruntime like the
other models.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

DAY_MS = 24 * 3600 * 1000
HALF_LIFE_DAYS = 3.5
WINDOW_DAYS = 14


def scores(
    orders: Iterable[tuple[int, Mapping[str, int]]],
    now_ms: int,
    half_life_days: float = HALF_LIFE_DAYS,
) -> dict[str, float]:
    """Decayed quantities sold per item from ``(time, {item: quantity})`` orders."""
    out: dict[str, float] = {}
    for ts_ms, lines in orders:
        age_days = max(0.0, (now_ms - ts_ms) / DAY_MS)
        weight = 0.5 ** (age_days / half_life_days)
        for item, quantity in lines.items():
            out[item] = out.get(item, 0.0) + weight * quantity
    return out


def graph(vocabulary: Sequence[str], by_item: Mapping[str, float]) -> bytes:
    """The ONNX model whose ``scores`` output is ``by_item`` over ``vocabulary``."""
    row: npt.NDArray[np.float32] = np.array(
        [[by_item.get(item, 0.0) for item in vocabulary]], dtype=np.float32
    )
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["trend"], ["scores"])],
            "trending",
            [],
            [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, len(vocabulary)])],
            [numpy_helper.from_array(row, "trend")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data
