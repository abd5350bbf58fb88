"""Hostile ONNX files for nnr.onnx.load (tests/onnx_test.sh), written with pip's onnx: each must be a clear
error, and the well-formed ones (external data inside the folder) must load. Usage: hostile.py DIR"""
import os, sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def model(nodes, inits=(), inputs=None, outputs=("y",), opset=17):
    inputs = inputs if inputs is not None else [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    g = helper.make_graph(nodes, "g", inputs, outs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def save(name, m):
    with open(os.path.join(out, name), "wb") as f:
        f.write(m.SerializeToString())


w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "w")
good = model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [w])
save("good.onnx", good)
save("newest_opset.onnx", model([helper.make_node("MatMul", ["x", "w"], ["a"], name="mm"), helper.make_node("Relu", ["a"], ["y"], name="r")],
                                [w], opset=onnx.defs.onnx_opset_version()))
data = good.SerializeToString()
with open(os.path.join(out, "truncated.onnx"), "wb") as f:
    f.write(data[: len(data) * 2 // 3])
with open(os.path.join(out, "text.onnx"), "wb") as f:
    f.write(b"this is not a model at all\n")

big = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 40, 1 << 40], raw_data=b"\0" * 16)
save("absurd_dims.onnx", model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [big]))
neg = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, -4], raw_data=b"\0" * 16)
save("negative_dim.onnx", model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [neg]))
short = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4], raw_data=b"\0" * 8)
save("short_initializer.onnx", model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [short]))
few = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4], float_data=[1.0, 2.0])
save("few_values.onnx", model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [few]))

save("cycle.onnx", model([helper.make_node("Add", ["x", "b"], ["a"], name="first"), helper.make_node("Relu", ["a"], ["b"], name="second"),
                          helper.make_node("Identity", ["a"], ["y"], name="out")]))
save("twice.onnx", model([helper.make_node("Relu", ["x"], ["y"], name="one"), helper.make_node("Relu", ["x"], ["y"], name="two")]))
save("unsupported.onnx", model([helper.make_node("Relu", ["x"], ["a"], name="r"), helper.make_node("Foo", ["a"], ["b"], name="f1"),
                                helper.make_node("Bar", ["b"], ["c"], name="b1"), helper.make_node("Foo", ["c"], ["y"], name="f2")]))
save("old_opset.onnx", model([helper.make_node("Relu", ["x"], ["y"], name="r")], opset=9))


def external(name, location):
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4])
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "64")):
        e = t.external_data.add()
        e.key, e.value = k, v
    save(name, model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [t]))


with open(os.path.join(out, "weights.bin"), "wb") as f:
    f.write(np.arange(16, dtype=np.float32).tobytes())
with open(os.path.join(out, "..", "outside.bin"), "wb") as f:
    f.write(np.arange(16, dtype=np.float32).tobytes())
external("external_ok.onnx", "weights.bin")
external("external_escape.onnx", "../outside.bin")
external("external_absolute.onnx", "/etc/passwd")
external("external_missing.onnx", "nowhere.bin")
if not os.path.exists(os.path.join(out, "link.bin")):
    os.symlink(os.path.join(out, "..", "outside.bin"), os.path.join(out, "link.bin"))
external("external_symlink.onnx", "link.bin")

# graphs nested in If's branches, 30 deep (90 messages): refused before protobuf-c recurses into them
leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "leaf", [], [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
inner = leaf
for i in range(30):
    node = helper.make_node("If", ["c"], ["z"], then_branch=inner, else_branch=leaf, name="if%d" % i)
    inner = helper.make_graph([node], "g%d" % i, [], [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
save("deep.onnx", model([helper.make_node("If", ["x"], ["y"], then_branch=inner, else_branch=leaf, name="top")]))
print("hostile files in", out)
