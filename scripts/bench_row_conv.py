"""How to run one grouped 3×3 conv on rows in onnxruntime (the choice behind ``amsr.rows.grid.grouped_conv3x3_rows``).

    python scripts/bench_row_conv.py [--rows 80000] [--groups 4] [--threads 2]

One 64-channel conv at P target rows read from P_s = 1.25·P source rows (random 3×3 tap tables), onnxruntime
CPU; median of 7 interleaved rounds, next to the dense Conv on a map of P pixels:

- ``block``: one Gather of the 9 tap rows, one MatMul with the block-diagonal weight (g× the multiplies);
- ``batched``: Gather, Transpose to group-major, one batched MatMul, Transpose back;
- ``split``: one Gather and MatMul per group from g channel-split sources;
- ``channel_major``: Gather on axis 1 of a C×P_s map, grouped 1×1 Conv;
- ``group_major``: rows kept group-major (g×P_s×I/g): Gather on axis 1, one batched MatMul, no Transpose.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _session(nodes: list[onnx.NodeProto], inputs: list[str], inits: dict[str, np.ndarray], threads: int):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    types = {n: TensorProto.INT64 if n == "taps" else TensorProto.FLOAT for n in inputs}
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info(n, types[n], None) for n in inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=80000)
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    rows, c, g = a.rows, 64, a.groups
    src, cg = rows * 5 // 4, c // g
    w = rng.standard_normal((c, cg, 3, 3)).astype(np.float32)
    taps = rng.integers(0, src + 1, size=(rows, 9)).astype(np.int64)
    x = rng.standard_normal((src + 1, c)).astype(np.float32)
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    flat = [helper.make_node("Reshape", ["taps", "minus1"], ["tf"])]

    full = np.zeros((c, c, 3, 3), np.float32)
    for k in range(g):
        full[k * cg:(k + 1) * cg, k * cg:(k + 1) * cg] = w[k * cg:(k + 1) * cg]
    w_group = w.reshape(g, cg, cg, 3, 3).transpose(0, 3, 4, 2, 1).reshape(g, 9 * cg, cg)
    variants = {
        "block": (_session(flat + [helper.make_node("Gather", ["x", "tf"], ["p"], axis=0),
                                   helper.make_node("Reshape", ["p", "s"], ["p2"]),
                                   helper.make_node("MatMul", ["p2", "w"], ["y"])], ["x", "taps"],
                           {"minus1": i64(-1), "s": i64(-1, 9 * c), "w": full.transpose(2, 3, 1, 0).reshape(9 * c, c)},
                           a.threads), {"x": x, "taps": taps}),
        "batched": (_session(flat + [helper.make_node("Gather", ["x", "tf"], ["p"], axis=0),
                                     helper.make_node("Reshape", ["p", "s"], ["p2"]),
                                     helper.make_node("Transpose", ["p2"], ["p3"], perm=[2, 0, 1, 3]),
                                     helper.make_node("Reshape", ["p3", "s2"], ["p4"]),
                                     helper.make_node("MatMul", ["p4", "w"], ["y0"]),
                                     helper.make_node("Transpose", ["y0"], ["y1"], perm=[1, 0, 2]),
                                     helper.make_node("Reshape", ["y1", "s3"], ["y"])], ["x", "taps"],
                             {"minus1": i64(-1), "s": i64(-1, 9, g, cg), "s2": i64(g, -1, 9 * cg),
                              "s3": i64(-1, c), "w": w_group}, a.threads), {"x": x, "taps": taps}),
        "channel_major": (_session([helper.make_node("Transpose", ["taps"], ["tT"], perm=[1, 0]),
                                    helper.make_node("Gather", ["xt", "tT"], ["p"], axis=1),
                                    helper.make_node("Reshape", ["p", "s"], ["p2"]),
                                    helper.make_node("Conv", ["p2", "w"], ["y"], group=g)], ["xt", "taps"],
                                   {"s": i64(1, 9 * c, 1, -1), "w": w.reshape(c, cg * 9, 1, 1)}, a.threads),
                          {"xt": np.ascontiguousarray(x.T), "taps": taps}),
    }
    split_nodes, inits, outs = list(flat), {"minus1": i64(-1), "s": i64(-1, 9 * cg)}, []
    for k in range(g):
        split_nodes += [helper.make_node("Gather", [f"x{k}", "tf"], [f"p{k}"], axis=0),
                        helper.make_node("Reshape", [f"p{k}", "s"], [f"q{k}"]),
                        helper.make_node("MatMul", [f"q{k}", f"w{k}"], [f"y{k}"])]
        inits[f"w{k}"] = w_group[k]
        outs.append(f"y{k}")
    split_nodes.append(helper.make_node("Concat", outs, ["y"], axis=1))
    variants["split"] = (_session(split_nodes, [f"x{k}" for k in range(g)] + ["taps"], inits, a.threads),
                         dict({f"x{k}": np.ascontiguousarray(x[:, k * cg:(k + 1) * cg]) for k in range(g)}, taps=taps))
    # Group-major rows (g×P_s×I/g): one Gather on axis 1 lands each group's taps contiguous, one batched
    # MatMul with the exact grouped weight; its output is group-major again, ready for the next conv.
    variants["group_major"] = (_session([helper.make_node("Gather", ["xg", "taps"], ["p"], axis=1),
                                         helper.make_node("Reshape", ["p", "s"], ["p2"]),
                                         helper.make_node("MatMul", ["p2", "w"], ["y"])], ["xg", "taps"],
                                        {"s": i64(g, -1, 9 * cg), "w": w_group}, a.threads),
                               {"xg": np.ascontiguousarray(x.reshape(-1, g, cg).transpose(1, 0, 2)), "taps": taps})
    side = int(rows ** 0.5)
    variants["dense_conv"] = (_session([helper.make_node("Conv", ["m", "w"], ["y"], group=g, pads=[1, 1, 1, 1])],
                                       ["m"], {"w": w}, a.threads),
                              {"m": rng.standard_normal((1, c, side, side)).astype(np.float32)})
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(7):
        for k, (s, feeds) in variants.items():
            t0 = time.perf_counter()
            s.run(None, feeds)
            times[k].append(time.perf_counter() - t0)
    dense = float(np.median(times["dense_conv"]))
    for k, t in times.items():
        print(f"{k:14s} {np.median(t) * 1e3:8.1f} ms  {np.median(t) / dense:5.2f}× dense")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
