"""One-node ONNX models of every operator nnr.onnx runs, with the attributes and edge cases that matter
(default strides, asymmetric pads, negative axes and steps, broadcasting, keepdims...), and onnxruntime's
outputs for seeded inputs, for tests/onnx/ops_check.lua (nnrun must give the same). Writes DIR/NAME.onnx
and DIR/NAME.json ({"inputs": [[name, dtype, shape, values]], "outputs": [[shape, values]]}).
Usage: ops.py DIR"""
import json, os, sys
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as TP, helper, numpy_helper

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)
ONNX_OF = {np.float32: TP.FLOAT, np.int64: TP.INT64, np.bool_: TP.BOOL}
cases = []


def f32(*shape): return rng.standard_normal(shape).astype(np.float32)
def i64(*values): return np.array(values, dtype=np.int64)


def case(name, op, inputs, consts=(), outputs=1, opset=17, **attrs):
    """inputs: [(name, array)] fed at run time; consts: [(name, array)] initializers"""
    node = helper.make_node(op, [n for n, _ in inputs] + [n for n, _ in consts], ["y%d" % i for i in range(outputs)], name=name, **attrs)
    g = helper.make_graph([node], name, [helper.make_tensor_value_info(n, ONNX_OF[a.dtype.type], a.shape) for n, a in inputs],
                         [helper.make_empty_tensor_value_info("y%d" % i) for i in range(outputs)],
                         initializer=[numpy_helper.from_array(a, n) for n, a in consts])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    path = os.path.join(out, name + ".onnx")
    onnx.save(m, path)
    res = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {n: a for n, a in inputs})
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump({"inputs": [[n, str(a.dtype), list(a.shape), a.flatten().tolist()] for n, a in inputs],
                   "outputs": [[list(r.shape), np.asarray(r, dtype=np.float64).flatten().tolist()] for r in res]}, f)
    cases.append(name)


x4 = f32(2, 3, 7, 6)
case("maxpool_default_stride", "MaxPool", [("x", x4)], kernel_shape=[2, 2])
case("maxpool_pads_asym", "MaxPool", [("x", x4 - 5)], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0])
case("maxpool_ceil", "MaxPool", [("x", x4)], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
case("maxpool_dilated", "MaxPool", [("x", x4)], kernel_shape=[2, 2], dilations=[2, 2])
case("avgpool_pad_counted", "AveragePool", [("x", x4)], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)
case("avgpool_pad_uncounted", "AveragePool", [("x", x4)], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
case("global_avg", "GlobalAveragePool", [("x", x4)])
case("global_max", "GlobalMaxPool", [("x", x4)])
case("conv_groups_dilation", "Conv", [("x", f32(2, 4, 9, 8))], [("w", f32(6, 2, 3, 3)), ("b", f32(6))], group=2, dilations=[2, 1],
     strides=[1, 2], pads=[1, 2, 1, 2])
case("conv_pads_asym", "Conv", [("x", f32(1, 3, 8, 8))], [("w", f32(4, 3, 3, 3))], pads=[0, 1, 2, 1])
case("conv1d", "Conv", [("x", f32(2, 3, 10))], [("w", f32(5, 3, 3)), ("b", f32(5))], pads=[1, 1])
case("gemm_trans_alpha_beta", "Gemm", [("a", f32(4, 3)), ("b", f32(5, 4))], [("c", f32(5))], transA=1, transB=1, alpha=0.5, beta=2.0)
case("gemm_broadcast_bias", "Gemm", [("a", f32(2, 3))], [("b", f32(3, 4)), ("c", f32(1))])
case("matmul_batched", "MatMul", [("a", f32(2, 1, 3, 4)), ("b", f32(5, 4, 2))])
case("batchnorm", "BatchNormalization", [("x", x4)], [("s", f32(3)), ("b", f32(3)), ("m", f32(3)), ("v", np.abs(f32(3)) + 0.5)],
     epsilon=1e-3)
case("layernorm_axis", "LayerNormalization", [("x", f32(2, 3, 4))], [("s", f32(3, 4)), ("b", f32(3, 4))], axis=1, epsilon=1e-4)
case("softmax_axis0", "Softmax", [("x", f32(3, 4, 2))], axis=0)
case("logsoftmax_neg", "LogSoftmax", [("x", f32(3, 4))], axis=-1)
case("gelu_tanh", "Gelu", [("x", f32(3, 5))], opset=20, approximate="tanh")
case("leaky_relu", "LeakyRelu", [("x", f32(3, 5))], alpha=0.2)
case("elu", "Elu", [("x", f32(3, 5))], alpha=0.7)
case("where_broadcast", "Where", [("c", rng.random((3, 1)) > 0.5), ("a", f32(1, 4)), ("b", f32(3, 4))])
case("div_int", "Div", [("a", i64(7, -7, 9, -9)), ("b", i64(2, 2, -4, -4))])
case("pow", "Pow", [("a", np.abs(f32(3, 4)) + 0.1), ("b", f32(4))])
case("max_three", "Max", [("a", f32(3, 4)), ("b", f32(4)), ("c", f32(3, 1))])
case("sum_two", "Sum", [("a", f32(3, 4)), ("b", f32(1, 4))])
case("equal_cast", "Cast", [("x", i64(1, 2, 3))], to=TP.FLOAT)
case("gather_neg", "Gather", [("x", f32(5, 3))], [("i", i64(-1, 0, 2, -5))], axis=0)
case("gather_axis1_2d", "Gather", [("x", f32(2, 5, 3))], [("i", np.array([[0, 4], [-2, 1]], dtype=np.int64))], axis=1)
case("reshape_zero_neg", "Reshape", [("x", f32(2, 3, 4))], [("s", i64(0, -1, 2))])
case("flatten_axis2", "Flatten", [("x", x4)], axis=2)
case("flatten_axis0", "Flatten", [("x", f32(2, 3))], axis=0)
case("transpose_perm", "Transpose", [("x", f32(2, 3, 4))], perm=[2, 0, 1])
case("transpose_default", "Transpose", [("x", f32(2, 3, 4))])
case("slice_steps", "Slice", [("x", f32(6, 7))], [("s", i64(1, -1)), ("e", i64(5, -8)), ("a", i64(0, 1)), ("st", i64(2, -2))])
case("slice_clamp", "Slice", [("x", f32(6, 7))], [("s", i64(-100, 3)), ("e", i64(100, 1000)), ("a", i64(0, -1))])
case("slice_neg_start_clamped", "Slice", [("x", f32(6))], [("s", i64(-100)), ("e", i64(-200)), ("a", i64(0)), ("st", i64(-1))])
case("split_input", "Split", [("x", f32(2, 7))], [("s", i64(3, 4))], outputs=2, axis=1)
case("split_num_outputs", "Split", [("x", f32(7, 2))], outputs=3, opset=18, axis=0, num_outputs=3)
case("squeeze_axes", "Squeeze", [("x", f32(1, 3, 1, 2))], [("a", i64(-2))])
case("unsqueeze_axes", "Unsqueeze", [("x", f32(3, 2))], [("a", i64(0, 3))])
case("concat_neg", "Concat", [("a", f32(2, 3)), ("b", f32(2, 1))], axis=-1)
case("expand", "Expand", [("x", f32(3, 1))], [("s", i64(2, 1, 4))])
case("tile", "Tile", [("x", f32(2, 3))], [("r", i64(2, 1))])
case("range_f", "Range", [], [("a", np.array(1.5, dtype=np.float32)), ("b", np.array(4.0, dtype=np.float32)), ("c", np.array(0.5, dtype=np.float32))])
case("reduce_mean_keep", "ReduceMean", [("x", f32(2, 3, 4))], [("a", i64(-1, 0))], opset=18, keepdims=1)
case("reduce_sum_nokeep", "ReduceSum", [("x", f32(2, 3, 4))], [("a", i64(1))], keepdims=0)
case("reduce_max_all", "ReduceMax", [("x", f32(2, 3, 4))], opset=18, keepdims=0)
case("reduce_mean_attr13", "ReduceMean", [("x", f32(2, 3, 4))], opset=13, axes=[1], keepdims=0)
case("pad_reflect", "Pad", [("x", f32(1, 2, 4, 5))], [("p", i64(0, 0, 1, 2, 0, 0, 2, 1))], mode="reflect")
case("pad_edge", "Pad", [("x", f32(1, 2, 4, 5))], [("p", i64(0, 0, 1, 2, 0, 0, 2, 1))], mode="edge")
case("pad_wrap", "Pad", [("x", f32(1, 2, 4, 5))], [("p", i64(0, 0, 1, 2, 0, 0, 2, 1))], opset=19, mode="wrap")
case("pad_constant_value", "Pad", [("x", f32(2, 3))], [("p", i64(1, 0, 0, 2)), ("v", np.array(2.5, dtype=np.float32))])
case("shape_slice", "Shape", [("x", x4)], opset=15, start=1, end=-1)
case("constant_of_shape", "ConstantOfShape", [], [("s", i64(2, 3))], value=numpy_helper.from_array(np.array([7], dtype=np.int64)))
with open(os.path.join(out, "cases.txt"), "w") as f:
    f.write("\n".join(cases) + "\n")
print(len(cases), "operator cases in", out)
