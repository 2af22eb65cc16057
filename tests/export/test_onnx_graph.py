"""quark.export.onnx_graph on small hand-made graphs: a rewrite computes what the graph did,
and a graph that does not match its pattern is left as it was. (The rewrites on a real
export: tests/export/test_onnx.py.)"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from quark.export import onnx_graph  # noqa: E402


def model(nodes: list[Any], inputs: list[Any], outputs: list[str], weights: dict) -> Any:
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        initializer=[numpy_helper.from_array(array, name) for name, array in weights.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    proto.ir_version = 10
    return proto


def run(proto: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def in_topological_order(graph: Any) -> bool:
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        if not all(name in known for name in node.input if name):
            return False
        known.update(node.output)
    return True


def test_matmuls_of_one_input_become_one_matmul_and_a_split() -> None:
    rng = np.random.default_rng(0)
    weights = {
        "w_q": rng.standard_normal((8, 6), dtype=np.float32),
        "w_k": rng.standard_normal((8, 4), dtype=np.float32),
        "w_other": rng.standard_normal((8, 3), dtype=np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w_q"], ["q"]),
        helper.make_node("Relu", ["x"], ["y"]),
        helper.make_node("MatMul", ["x", "w_k"], ["k"]),
        helper.make_node("MatMul", ["y", "w_other"], ["other"]),  # another input: stays
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", 8])]
    proto = model(nodes, inputs, ["q", "k", "other"], weights)
    feeds = {"x": rng.standard_normal((2, 3, 8), dtype=np.float32)}
    before = run(proto, feeds)

    assert onnx_graph.fuse_sibling_matmuls(proto.graph) == 1
    onnx_graph.remove_unused(proto.graph)
    assert in_topological_order(proto.graph)
    assert [n.op_type for n in proto.graph.node].count("MatMul") == 2
    assert {t.name for t in proto.graph.initializer} == {
        "w_q.fused",
        "w_q.fused_split",
        "w_other",
    }
    for got, expected in zip(run(proto, feeds), before, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_attention_without_the_exporters_pattern_is_left_alone() -> None:
    # q, k, v straight from the inputs, no rotary, no cache Concat: nothing to fold
    nodes = [helper.make_node("Attention", ["q", "k", "v"], ["y"])]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 2, 3, 4]) for name in "qkv"
    ]
    proto = model(nodes, inputs, ["y"], {})
    before = proto.SerializeToString()
    assert onnx_graph.attention_in_model_layout(proto.graph) == 0
    assert proto.SerializeToString() == before


def test_nodes_and_weights_nothing_reads_are_removed() -> None:
    weights = {"used": np.ones((2, 2), np.float32), "unused": np.ones((2, 2), np.float32)}
    nodes = [
        helper.make_node("MatMul", ["x", "used"], ["y"]),
        helper.make_node("MatMul", ["x", "unused"], ["dead"]),
        helper.make_node("Relu", ["dead"], ["dead_too"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])]
    proto = model(nodes, inputs, ["y"], weights)
    onnx_graph.remove_unused(proto.graph)
    assert [n.output[0] for n in proto.graph.node] == ["y"]
    assert [t.name for t in proto.graph.initializer] == ["used"]
