"""The QAT rewrite of tf2onnx's output: float weights -> int8 codes on the QAT grid, and a QDQ
graph ONNX Runtime fuses into QLinearConv / QGemm.

Why: tf2onnx folds the QAT model's weight fake-quant into float32 constants (and folds BatchNorm
into them), so its "int8" ONNX keeps float weights. The folded values still lie on the QAT grid
(per output channel, times the folded BatchNorm factor), so they are re-quantized here exactly.
The pass order is one visible list, in `rewrite_qat_onnx`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.convert.onnx_graph import PASSTHROUGH, WEIGHTED, _dq_params, _Graph
from edgekit.errors import ExportError

_GRID_TOLERANCE = 1e-3  # max |folded - code*scale| in units of the channel's scale

# ----------------------------------------------------------------------------- rewrite passes

def requantize_weights(graph: _Graph, codes: dict[str, dict]) -> tuple[int, list[str]]:
    """Replace each float weight of Conv/MatMul/Gemm by int8 codes + DequantizeLinear; returns
    (how many, the nodes left float).

    A weight is matched to its QAT layer with certainty or not at all: by name (tf2onnx keeps TF
    scope names) and that layer's shape; else, where tf2onnx renamed the node (ResNet50's
    conv1_conv, Conv + bias + BatchNorm folded, becomes "Conv__777"), by value: the one layer not
    named by any node whose codes reproduce the folded weights on its grid (_grid_scale: every
    weight within 1e-3 of a step of scale x code, per channel). A weight matching no layer, or
    several, stays float and is logged: a partially quantized model has float weights by design
    (edgekit.convert.quantize.qat_float_layers), and guessing by weight count picked the wrong
    layer (two 1x1 convs of a squeeze-excite block have the same size). The int8 audit still
    judges the file."""
    import logging

    from onnx import helper

    weighted = []
    for node in graph.g.node:
        if node.op_type in WEIGHTED and len(node.input) >= 2:
            w = graph.const(node.input[1])
            if w is not None and w.dtype == np.float32:
                weighted.append((node, w, _match_layer(node, codes)))
    unclaimed = set(codes) - {wrapper for _, _, wrapper in weighted}
    done, left_float = 0, []
    for node, w, wrapper in weighted:
        layout = _onnx_layout(node, codes[wrapper], w.shape) if wrapper is not None else None
        if layout is not None:
            scale = _fit_scale(w, *layout, codes[wrapper], node.name)
        elif wrapper is None:
            fits = []
            for candidate in sorted(unclaimed):
                cand_layout = _onnx_layout(node, codes[candidate], w.shape)
                cand_scale = None if cand_layout is None else _grid_scale(w, *cand_layout, codes[candidate])[0]
                if cand_scale is not None:
                    fits.append((candidate, cand_layout, cand_scale))
            if len(fits) == 1:
                wrapper, layout, scale = fits[0]
                unclaimed.discard(wrapper)
        if layout is None:
            why = (f"shape {tuple(w.shape)} is not QAT layer '{codes[wrapper]['layer']}' "
                   f"{codes[wrapper]['codes'].shape}" if wrapper is not None
                   else "no QAT layer of that name, and not exactly one whose codes fit its values")
            logging.getLogger(__name__).warning("ONNX node '%s' keeps float weights (%s)", node.name, why)
            left_float.append(node.name)
            continue
        k, axis = layout
        base = node.input[1]
        qname = graph.add_init(graph.unique(f"{base}_int8"), k.astype(np.int8))
        sname = graph.add_init(graph.unique(f"{base}_scale"), scale.astype(np.float32))
        out = graph.unique(f"{base}_dq")
        attrs = {"axis": axis} if scale.ndim == 1 else {}
        # symmetric: no zero-point input (defaults to 0 of the int8 input's type), fewer bytes
        ins = [qname, sname]
        if node.op_type != "Conv":  # ORT forms QGemm only when the weight's DQ has a zero point
            ins.append(graph.add_init(graph.unique(f"{base}_zp"), np.zeros(scale.shape, np.int8)))
        dq = helper.make_node("DequantizeLinear", ins, [out], name=out, **attrs)
        graph.insert_before(node, dq)
        node.input[1] = out
        done += 1
    return done, left_float


def _match_layer(node, codes: dict) -> str | None:
    """The QAT wrapper this node's weight came from, by name: tf2onnx keeps TF scope names, and a
    wrapper name is one or more whole "/" segments of them (MobileNetV3's
    "quant_expanded_conv/squeeze_excite/Conv"); the longest one wins ("quant_a/b" over
    "quant_a"). None when no single wrapper is named: never a guess."""
    scopes = (f"/{node.name}/", f"/{node.input[1]}/")
    named = [w for w in codes if any(f"/{w}/" in s for s in scopes)]
    longest = [w for w in named if len(w) == max(map(len, named))]
    return longest[0] if len(longest) == 1 else None


def _onnx_layout(node, entry: dict, shape: tuple) -> tuple[np.ndarray, int] | None:
    """Keras-layout codes -> the ONNX weight's layout, and the ONNX output-channel axis; None
    when they do not have the ONNX weight's shape (not this layer's weight)."""
    k = entry["codes"]
    if node.op_type == "Conv":
        if entry["attr"] == "depthwise_kernel":  # (kh, kw, cin, mult) -> (cin*mult, 1, kh, kw)
            kh, kw, cin, mult = k.shape
            k = k.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[:, None]
        else:                                   # (kh, kw, cin, cout) -> (cout, cin, kh, kw)
            k = k.transpose(3, 2, 0, 1)
        axis = 0
    else:
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        k, axis = (k.T, 0) if trans_b else (k, 1)
    if tuple(k.shape) != tuple(shape):
        return None
    return k, axis


def _grid_scale(w: np.ndarray, k: np.ndarray, axis: int, entry: dict) -> tuple[np.ndarray | None, float]:
    """(per-channel scale s with w == s*k, least squares; None unless every weight lies within
    _GRID_TOLERANCE steps of it and s > 0), and the worst error in steps.

    Without BatchNorm s equals the QAT scale; with BatchNorm folded in, it is that scale times
    the per-channel BN factor. A scalar when all channels share it (per-tensor Dense)."""
    wm = np.moveaxis(w.astype(np.float64), axis, 0).reshape(w.shape[axis], -1)
    km = np.moveaxis(k.astype(np.float64), axis, 0).reshape(k.shape[axis], -1)
    kk = (km * km).sum(1)
    qat = np.broadcast_to(np.asarray(entry["scale"], np.float64), (w.shape[axis],))
    s = np.where(kk > 0, (wm * km).sum(1) / np.where(kk > 0, kk, 1), np.where(qat > 0, qat, 1e-8))
    err = np.abs(wm - s[:, None] * km).max(1) / np.maximum(np.abs(s), 1e-30)
    worst = float(err.max()) if err.size else 0.0
    if not np.all(err <= _GRID_TOLERANCE) or np.any(s <= 0):
        return None, worst
    if np.allclose(s, s[0], rtol=1e-6, atol=0) and np.ndim(entry["scale"]) == 0:
        return np.asarray(s[0], np.float32), worst
    return s.astype(np.float32), worst


def _fit_scale(w: np.ndarray, k: np.ndarray, axis: int, entry: dict, name: str) -> np.ndarray:
    """_grid_scale of a weight matched by name; ExportError when it is off the QAT grid."""
    s, worst = _grid_scale(w, k, axis, entry)
    if s is None:
        raise ExportError(f"ONNX node '{name}': folded weights are off the QAT int8 grid "
                          f"(error {worst:.3g} steps); re-run QAT fine-tuning before export")
    return s


def matmul_add_to_gemm(graph: _Graph, ranks: dict[str, int]) -> int:
    """MatMul(A 2-D, B const) -> Add(const bias) becomes one Gemm, so the bias can be int32."""
    from onnx import helper

    done = 0
    for node in list(graph.g.node):
        if node.op_type != "MatMul" or ranks.get(node.input[0]) != 2:
            continue
        users = graph.consumers(node.output[0])
        if len(users) != 1 or users[0].op_type != "Add" or graph.is_graph_output(node.output[0]):
            continue
        add = users[0]
        other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
        bias = graph.const(other)
        if bias is None or bias.ndim != 1:
            continue
        gemm = helper.make_node("Gemm", [node.input[0], node.input[1], other], [add.output[0]],
                                name=node.name or add.name)
        graph.insert_before(node, gemm)
        graph.remove(node)
        graph.remove(add)
        done += 1
    return done


def propagate_quantized(graph: _Graph) -> int:
    """Run shape-only ops on quantized tensors: DQ -> P becomes P -> DQ, and P -> Q becomes
    Q -> P, so every weighted op sees DQ inputs and Q outputs (the pattern ORT fuses). A Pad
    with zeros (ZeroPadding2D) is one of them: on the codes it pads with the zero point, whose
    value is exactly 0."""
    from onnx import helper

    moves = 0
    changed = True
    while changed:
        changed = False
        for node in list(graph.g.node):
            if not _runs_on_codes(graph, node) or graph.is_graph_output(node.output[0]):
                continue
            src = graph.producer(node.input[0])
            if src is not None and src.op_type == "DequantizeLinear" and _dq_params(graph, src) \
                    and (node.op_type != "Pad" or len(src.input) > 2):
                # DQ -> P  =>  P(q) -> DQ
                qout = graph.unique(f"{node.output[0]}_q")
                moved = helper.make_node(node.op_type, _on_codes(node, src.input[0], src), [qout],
                                         name=graph.unique(node.name), domain=node.domain)
                moved.attribute.extend(node.attribute)
                dq = helper.make_node("DequantizeLinear", [qout, *src.input[1:]], [node.output[0]],
                                      name=graph.unique(f"{node.name}_dq"))
                graph.insert_after(node, moved, dq)
                graph.remove(node)
                changed = True
                moves += 1
                break
            users = graph.consumers(node.output[0])
            if (len(users) == 1 and users[0].op_type == "QuantizeLinear" and _dq_params(graph, users[0])
                    and (src is None or src.op_type != "DequantizeLinear")
                    and (node.op_type != "Pad" or len(users[0].input) > 2)):
                # P -> Q  =>  Q -> P(q)
                q = users[0]
                qin = graph.unique(f"{node.input[0]}_q")
                quant = helper.make_node("QuantizeLinear", [node.input[0], *q.input[1:]], [qin],
                                         name=graph.unique(f"{node.name}_q"))
                moved = helper.make_node(node.op_type, _on_codes(node, qin, q), [q.output[0]],
                                         name=graph.unique(node.name), domain=node.domain)
                moved.attribute.extend(node.attribute)
                graph.insert_before(node, quant, moved)
                graph.remove(node)
                graph.remove(q)
                changed = True
                moves += 1
                break
    graph.prune()
    return moves


def _runs_on_codes(graph: _Graph, node) -> bool:
    """A shape-only op (PASSTHROUGH), or a constant-mode Pad with zeros."""
    if node.op_type in PASSTHROUGH:
        return True
    if node.op_type != "Pad" or len(node.input) < 2 \
            or any(a.name == "mode" and a.s not in (b"", b"constant") for a in node.attribute):
        return False  # (before opset 11, Pad takes its pads as an attribute)
    value = graph.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(())
    return value is not None and value.size == 1 and float(value.reshape(())) == 0.0


def _on_codes(node, codes: str, qdq) -> list[str]:
    """`node`'s inputs with `codes` for its data; a Pad pads with the zero point of `qdq` (the
    DequantizeLinear or QuantizeLinear whose codes it now reads or writes)."""
    rest = list(node.input[1:])
    if node.op_type == "Pad":
        rest = [rest[0], qdq.input[2], *rest[2:]]
    return [codes, *rest]


def remove_requantize_pairs(graph: _Graph) -> int:
    """DQ -> Q with identical parameters is the identity on the integer tensor: skip it."""
    done = 0
    for q in list(graph.g.node):
        if q.op_type != "QuantizeLinear":
            continue
        dq = graph.producer(q.input[0])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        a, b = _dq_params(graph, dq), _dq_params(graph, q)
        if a is None or b is None or a[0].item() != b[0].item() or a[1] is None or b[1] is None \
                or a[1].dtype != b[1].dtype or a[1].item() != b[1].item():
            continue
        for user in graph.consumers(q.output[0]):
            for i, name in enumerate(user.input):
                if name == q.output[0]:
                    user.input[i] = dq.input[0]
        if graph.is_graph_output(q.output[0]):
            continue
        graph.remove(q)
        done += 1
    graph.prune()
    return done


def fold_relu_into_quantize(graph: _Graph) -> int:
    """X -> Relu -> Q  becomes  X -> Q (-> Clip(min=zero point) when the range reaches below 0).

    Exact: Q is monotonic and Q(0) is the zero point, so Q(relu(x)) == max(Q(x), zp). Without it
    ORT fuses Conv+Relu in float and never forms QLinearConv when the QAT range is not [0, max]."""
    from onnx import helper

    done = 0
    for relu in list(graph.g.node):
        if relu.op_type != "Relu":
            continue
        users = graph.consumers(relu.output[0])
        if len(users) != 1 or users[0].op_type != "QuantizeLinear" or graph.is_graph_output(relu.output[0]):
            continue
        q = users[0]
        params = _dq_params(graph, q)
        if params is None or params[1] is None:
            continue
        zp = params[1]
        q.input[0] = relu.input[0]
        graph.remove(relu)
        if zp.item() != np.iinfo(zp.dtype).min:
            clipped = q.output[0]
            q.output[0] = graph.unique(f"{clipped}_unclipped")
            lo = graph.add_init(graph.unique(f"{clipped}_relu_min"), zp.reshape(()))
            graph.insert_after(q, helper.make_node("Clip", [q.output[0], lo], [clipped],
                                                   name=graph.unique(f"{relu.name}_as_clip")))
        done += 1
    graph.prune()
    return done


def quantize_biases(graph: _Graph) -> int:
    """Float bias of a Conv/Gemm with DQ input and DQ weight -> int32 + DQ (scale x_s * w_s)."""
    from onnx import helper

    done = 0
    for node in list(graph.g.node):
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or not node.input[2]:
            continue
        bias = graph.const(node.input[2])
        xdq, wdq = graph.producer(node.input[0]), graph.producer(node.input[1])
        if bias is None or bias.dtype != np.float32 or xdq is None or wdq is None \
                or xdq.op_type != "DequantizeLinear" or wdq.op_type != "DequantizeLinear":
            continue
        x_scale = graph.const(xdq.input[1])
        w_scale = graph.const(wdq.input[1])
        if x_scale is None or x_scale.size != 1 or w_scale is None:
            continue
        b_scale = (x_scale.astype(np.float64).reshape(()) * np.broadcast_to(w_scale.astype(np.float64),
                                                                             bias.shape)).astype(np.float32)
        q = np.clip(np.rint(bias.astype(np.float64) / b_scale.astype(np.float64)), -2**31, 2**31 - 1).astype(np.int32)
        base = node.input[2]
        qname = graph.add_init(graph.unique(f"{base}_int32"), q)
        sname = graph.add_init(graph.unique(f"{base}_scale"), b_scale)
        out = graph.unique(f"{base}_dq")
        graph.insert_before(node, helper.make_node("DequantizeLinear", [qname, sname], [out],
                                                   name=out, axis=0))
        node.input[2] = out
        done += 1
    graph.prune()
    return done


def _ranks(model) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            ranks[vi.name] = len(t.shape.dim)
    return ranks


def rewrite_qat_onnx(model, codes: dict[str, dict]) -> tuple[Any, dict]:
    """tf2onnx's QAT ONNX (float weights) -> int8 weights, int32 biases, fusable QDQ."""
    graph = _Graph(model)
    stats = {}
    stats["weights"], stats["float_weights"] = requantize_weights(graph, codes)
    stats["gemm"] = matmul_add_to_gemm(graph, _ranks(model))
    stats["relu_folded"] = fold_relu_into_quantize(graph)
    stats["moved"] = propagate_quantized(graph)
    stats["requantize_pairs"] = remove_requantize_pairs(graph)
    stats["biases"] = quantize_biases(graph)
    return model, stats
