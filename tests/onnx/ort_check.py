"""Models nnr.onnx.export wrote (tests/onnx/check.lua) in pip's onnx and onnxruntime: each passes
onnx.checker (full check) and onnxruntime's CPU provider gives nnrun's outputs within 1e-5, at the batch
of the example and at another (the batch dimension is dynamic). Usage: ort_check.py DIR"""
import glob, json, os, sys
import numpy as np
import onnx
import onnxruntime as ort

passed = failed = 0
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.onnx"))):
    name = os.path.basename(path)[:-5]
    with open(path[:-5] + ".json") as f:
        ref = json.load(f)
    try:
        onnx.checker.check_model(onnx.load(path), full_check=True)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        worst = 0.0
        for case in ref["cases"]:
            x = np.array(case["input"][1], dtype=case.get("dtype", "float32")).reshape(case["input"][0])
            want = np.array(case["output"][1], dtype=np.float32).reshape(case["output"][0])
            got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
            worst = max(worst, float(np.abs(got - want).max()))
        ok = worst <= 1e-5
        print("%s %s: onnx.checker passes, onnxruntime agrees within %.3g over batches %s" % ("ok" if ok else "FAIL", name, worst,
              [c["input"][0][0] for c in ref["cases"]]))
    except Exception as e:                      # a checker or runtime refusal is a failure with its message
        ok = False
        print("FAIL %s: %s" % (name, e))
    passed, failed = passed + ok, failed + (not ok)
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
