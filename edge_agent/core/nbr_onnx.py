"""The shipped next-basket model as an ONNX graph (built with onnx.helper, no I/O).

Serving input is what the agent has for any shopper, also one never seen at training time:
``history``, float32 ``[batch, n_items]``, the decayed average basket of the shopper's past
baskets (``edge_agent.core.nbr.history_vector`` with the decay stored in the model's metadata),
and ``k``, int64 ``[1]``. Outputs: ``scores`` float32 ``[batch, n_items]``, every item's score
(the agent's model registry contract), and ``items`` int64 ``[batch, k]`` with ``top_scores``
float32 ``[batch, k]``, best first (TopK; equal scores go to the lower item id).

The graph is ``history @ item_factors @ weights + bias + repeat_weight * history``: two
``n_items x rank`` float32 matrices (about 24.6 MB at rank 256 for 11,997 items).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_agent.core.nbr import NbrModel

OPSET = 17
IR_VERSION = 8
INPUT_HISTORY = "history"
INPUT_K = "k"
OUTPUT_ITEMS = "items"
OUTPUT_TOP_SCORES = "top_scores"
OUTPUT_SCORES = "scores"


def build_graph(model: NbrModel, name: str = "nbr") -> onnx.ModelProto:
    """The scoring graph of ``model``, checked by ``onnx.checker``."""
    n_items = model.n_items
    initializers = [
        numpy_helper.from_array(np.ascontiguousarray(model.item_factors, np.float32), "factors"),
        numpy_helper.from_array(np.ascontiguousarray(model.weights, np.float32), "weights"),
        numpy_helper.from_array(np.ascontiguousarray(model.bias, np.float32), "bias"),
        numpy_helper.from_array(np.array(model.repeat_weight, dtype=np.float32), "repeat_weight"),
    ]
    nodes = [
        helper.make_node("MatMul", [INPUT_HISTORY, "factors"], ["latent"]),
        helper.make_node("MatMul", ["latent", "weights"], ["transition"]),
        helper.make_node("Add", ["transition", "bias"], ["with_prior"]),
        helper.make_node("Mul", [INPUT_HISTORY, "repeat_weight"], ["repeat"]),
        helper.make_node("Add", ["with_prior", "repeat"], [OUTPUT_SCORES]),
        helper.make_node(
            "TopK",
            [OUTPUT_SCORES, INPUT_K],
            [OUTPUT_TOP_SCORES, OUTPUT_ITEMS],
            axis=-1,
            largest=1,
            sorted=1,
        ),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        inputs=[
            helper.make_tensor_value_info(INPUT_HISTORY, TensorProto.FLOAT, ["batch", n_items]),
            helper.make_tensor_value_info(INPUT_K, TensorProto.INT64, [1]),
        ],
        outputs=[
            helper.make_tensor_value_info(OUTPUT_ITEMS, TensorProto.INT64, ["batch", "k"]),
            helper.make_tensor_value_info(OUTPUT_TOP_SCORES, TensorProto.FLOAT, ["batch", "k"]),
            helper.make_tensor_value_info(OUTPUT_SCORES, TensorProto.FLOAT, ["batch", n_items]),
        ],
        initializer=initializers,
    )
    proto = helper.make_model(
        graph,
        producer_name="edge_agent.nbr",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    proto.ir_version = IR_VERSION
    helper.set_model_props(
        proto,
        {
            "n_items": str(n_items),
            "history_decay": repr(model.decay),
            "history_input": "decayed average basket: sum_j decay**(n-1-j) onehot(b_j) / "
            "sum_j decay**(n-1-j), baskets oldest first",
        },
    )
    onnx.checker.check_model(proto)
    return proto


def serialize(model: NbrModel) -> bytes:
    """The ONNX file's bytes."""
    data: bytes = build_graph(model).SerializeToString()
    return data
