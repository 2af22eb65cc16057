"""Rewrites of the exported ONNX graph that cut the nodes a decoding step runs, in standard
ONNX (opset 23), so the file still runs anywhere ONNX does.

At one token a step a small model's time goes to per-node dispatch as much as to arithmetic
(bench/RESULTS.md: llama_tiny's fp32 graph spent about 0.4 of its 0.9 ms outside MatMuls), so
each node removed here is time saved on every generated token:

    attention_in_model_layout  Attention on [batch, seq, heads * head_dim] with the cache's
                               past in and present out: no per-layer Reshape/Transpose of
                               q, k, v and the output, no Concat of past and new keys/values
    fuse_sibling_matmuls       one MatMul (and a Split) where several read the same input:
                               q, k, v and gate, up
    remove_unused              nodes and weights nothing reads any more

Each rewrite matches the exporter's pattern or leaves the graph as it is; the export is
validated against the source model afterwards either way (quark.export.validation).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any


def rewrite_for_decoding(path: Path) -> dict[str, int]:
    """Apply the rewrites to the model at `path` in place; return how often each applied.

    The exporter's per-node debugging notes (FX node, Python stack trace) go too: about 1 KB a
    node, more than the weights of a small model."""
    import onnx

    data = path.with_name(path.name + ".data")
    external = data.exists()
    proto = onnx.load(str(path))  # with its weights: the MatMul fusion concatenates them
    graph = proto.graph
    for node in graph.node:
        del node.metadata_props[:]
    applied = {
        "attention_in_model_layout": attention_in_model_layout(graph),
        "fuse_sibling_matmuls": fuse_sibling_matmuls(graph),
    }
    remove_unused(graph)
    # rewritten tensors changed shape: ONNX Runtime infers them again
    del graph.value_info[:]
    if external:
        data.unlink()  # onnx.save appends to an existing data file
    onnx.save(
        proto,
        str(path),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=data.name,
    )
    return applied


class Graph:
    """Who produces and who reads each tensor of an ONNX graph."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.producer = {name: node for node in graph.node for name in node.output}
        self.readers: dict[str, list[Any]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.readers[name].append(node)

    def made_by(self, tensor: str, op_type: str) -> Any | None:
        node = self.producer.get(tensor)
        return node if node is not None and node.op_type == op_type else None

    def only_reader(self, tensor: str, op_type: str) -> Any | None:
        readers = self.readers.get(tensor, [])
        if len(readers) == 1 and readers[0].op_type == op_type:
            return readers[0]
        return None

    def read_once(self, tensor: str) -> bool:
        return len(self.readers.get(tensor, [])) == 1


def attribute(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for item in node.attribute:
        if item.name == name:
            return onnx.helper.get_attribute_value(item)
    return default


def is_heads_transpose(node: Any) -> bool:
    """[batch, seq, heads, head_dim] <-> [batch, heads, seq, head_dim]"""
    return list(attribute(node, "perm", [])) == [0, 2, 1, 3]


def split_into_heads(g: Graph, tensor: str) -> tuple[str, list[Any]] | None:
    """`tensor` = Transpose(0, 2, 1, 3)(Reshape(x)) read only there: (x, those two nodes)."""
    transpose = g.made_by(tensor, "Transpose")
    if transpose is None or not is_heads_transpose(transpose) or not g.read_once(tensor):
        return None
    reshape = g.made_by(transpose.input[0], "Reshape")
    if reshape is None or not g.read_once(reshape.output[0]):
        return None
    return reshape.input[0], [transpose, reshape]


def attention_in_model_layout(graph: Any) -> int:
    """Per layer, the exporter writes

        q = Rotary(Transpose(Reshape(q_proj)))            [batch, heads, seq, head_dim]
        k = Concat(past_k, Rotary(Transpose(Reshape(k_proj))))      (present.N.key)
        v = Concat(past_v, Transpose(Reshape(v_proj)))              (present.N.value)
        y = Reshape(Transpose(Attention(q, k, v, mask)))   [batch, seq, hidden]

    and opset 23's Attention and RotaryEmbedding take [batch, seq, heads * head_dim] with the
    head counts as attributes, and the past, returning the present. Becomes

        y, present.N.key, present.N.value = Attention(Rotary(q_proj), Rotary(k_proj), v_proj,
                                                      mask, past_k, past_v)
    """
    import onnx

    g = Graph(graph)
    gone: set[int] = set()
    rewritten = 0
    for attention in [node for node in graph.node if node.op_type == "Attention"]:
        if len(attention.input) not in (3, 4) or len(attention.output) != 1:
            continue  # already takes a past, or returns more than its output
        q, k, v = attention.input[:3]
        mask = attention.input[3] if len(attention.input) == 4 else ""
        q_rotary = g.made_by(q, "RotaryEmbedding")
        k_concat = g.made_by(k, "Concat")
        v_concat = g.made_by(v, "Concat")
        if q_rotary is None or k_concat is None or v_concat is None:
            continue
        if len(k_concat.input) != 2 or len(v_concat.input) != 2:
            continue
        if attribute(k_concat, "axis") not in (-2, 2) or attribute(v_concat, "axis") not in (-2, 2):
            continue
        k_rotary = g.made_by(k_concat.input[1], "RotaryEmbedding")
        if k_rotary is None or not g.read_once(q) or not g.read_once(k_concat.input[1]):
            continue
        q_heads = attribute(q_rotary, "num_heads")
        kv_heads = attribute(k_rotary, "num_heads")
        if not q_heads or not kv_heads:
            continue
        q_split = split_into_heads(g, q_rotary.input[0])
        k_split = split_into_heads(g, k_rotary.input[0])
        v_split = split_into_heads(g, v_concat.input[1])
        merge = g.only_reader(attention.output[0], "Transpose")
        if q_split is None or k_split is None or v_split is None:
            continue
        if merge is None or not is_heads_transpose(merge):
            continue
        flatten = g.only_reader(merge.output[0], "Reshape")
        if flatten is None:
            continue

        q_rotary.input[0] = q_split[0]
        k_rotary.input[0] = k_split[0]
        inputs = [q, k_concat.input[1], v_split[0], mask, k_concat.input[0], v_concat.input[0]]
        del attention.input[:]
        attention.input.extend(inputs)
        outputs = [flatten.output[0], k_concat.output[0], v_concat.output[0]]
        del attention.output[:]
        attention.output.extend(outputs)
        attention.attribute.extend(
            [
                onnx.helper.make_attribute("q_num_heads", q_heads),
                onnx.helper.make_attribute("kv_num_heads", kv_heads),
            ]
        )
        for node in (*q_split[1], *k_split[1], *v_split[1], k_concat, v_concat, merge, flatten):
            gone.add(id(node))
        rewritten += 1
    kept = [node for node in graph.node if id(node) not in gone]
    del graph.node[:]
    graph.node.extend(kept)
    return rewritten


def fuse_sibling_matmuls(graph: Any) -> int:
    """MatMuls of one input by constant [in, out_i] weights become one MatMul by the weights
    side by side and a Split: q, k, v (and gate, up) one wider product instead of three
    narrow ones, which at one token is mostly per-node overhead. Weight-only quantization
    (quark.export.onnx_int8) quantizes each output column alike either way."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    weights = {tensor.name: tensor for tensor in graph.initializer}
    siblings: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is not None and len(weight.dims) == 2:
            siblings[node.input[0]].append(node)
    fused = 0
    for source, matmuls in siblings.items():
        if len(matmuls) < 2:
            continue
        arrays = [numpy_helper.to_array(weights[m.input[1]], base_dir="") for m in matmuls]
        if len({a.shape[0] for a in arrays}) != 1 or len({a.dtype for a in arrays}) != 1:
            continue
        first = matmuls[0]
        weight = f"{first.input[1]}.fused"
        sizes = f"{first.input[1]}.fused_split"
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.concatenate(arrays, axis=1), weight),
                numpy_helper.from_array(np.array([a.shape[1] for a in arrays], np.int64), sizes),
            ]
        )
        product = f"{first.output[0]}.fused"
        matmul = onnx.helper.make_node(
            "MatMul", [source, weight], [product], name=f"{first.name}.fused"
        )
        split = onnx.helper.make_node(
            "Split",
            [product, sizes],
            [m.output[0] for m in matmuls],
            axis=-1,
            name=f"{first.name}.split",
        )
        # where the first sibling was: the source is made before it, every reader after
        at = list(graph.node).index(first)
        for node in matmuls:
            graph.node.remove(node)
        graph.node.insert(at, split)
        graph.node.insert(at, matmul)
        fused += 1
    return fused


def remove_unused(graph: Any) -> None:
    """Drop nodes whose outputs nothing reads (the exporter's shape arithmetic for the
    Reshapes removed above) and weights no node reads. A graph with subgraphs (If, Loop)
    is left whole: their nodes read names this walk does not see."""
    import onnx

    if any(a.type == onnx.AttributeProto.GRAPH for node in graph.node for a in node.attribute):
        return
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    weights = [tensor for tensor in graph.initializer if tensor.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(weights)
