"""Reads the event files write.lua made with pip's tensorboard package and checks every value against
expected.json: the records' framing and CRCs (tensorboard's own reader checks both), scalars (float32 as
TensorBoard stores them), histograms (numpy's counts over the same edges, and the sums in the same
order), images (the PNG decoded here, pixel by pixel), text and the hparams plugin's data; then loads the
directory as TensorBoard's UI does (EventAccumulator) and checks it sees every tag.
Usage: python read.py DIR  (the python of a venv with tensorboard)"""
import glob
import json
import math
import os
import struct
import sys
import zlib

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def events(path):
    out = []
    for raw in RawEventFileLoader(path).Load():
        out.append(event_pb2.Event.FromString(raw))
    return out


def record_count(path):
    """the records in the file, walking its framing directly (RawEventFileLoader stops quietly at a bad one)"""
    data, n, at = open(path, "rb").read(), 0, 0
    while at < len(data):
        (length,) = struct.unpack_from("<Q", data, at)
        at += 12 + length + 4
        n += 1
    check(at == len(data), f"{path}: the records do not end at the end of the file")
    return n


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))


def png_pixels(png):
    """8-bit grey, RGB or RGBA PNG -> (channels, height, width, pixels as [c][y][x] flattened c-major)"""
    check(png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG")
    at, idat, w, h, c = 8, b"", 0, 0, 1
    while at < len(png):
        (n,) = struct.unpack_from(">I", png, at)
        kind, body = png[at + 4:at + 8], png[at + 8:at + 8 + n]
        check(zlib.crc32(kind + body) == struct.unpack_from(">I", png, at + 8 + n)[0], "PNG chunk CRC")
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            check(depth == 8, "PNG depth")
            c = {0: 1, 2: 3, 6: 4}[ctype]
        elif kind == b"IDAT":
            idat += body
        at += 12 + n
    raw, stride, prev, rows = zlib.decompress(idat), w * c, bytearray(w * c), []
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - c] if i >= c else 0
            b, d = prev[i], prev[i - c] if i >= c else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - d
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - d)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else d)) & 255
        rows.append(line)
        prev = line
    return c, h, w, [rows[y][x * c + k] for k in range(c) for y in range(h) for x in range(w)]


def tf_edges():
    pos, v = [], 1e-12
    while v < 1e20:
        pos.append(v)
        v *= 1.1
    return [-x for x in reversed(pos)] + [0.0] + pos


def main():
    top = sys.argv[1]
    exp = json.load(open(os.path.join(top, "expected.json")))
    path = os.path.join(top, os.path.basename(exp["path"]))    # the file write.lua wrote, wherever DIR now is
    check(os.path.basename(path).startswith("events.out.tfevents.") and path.endswith(".nnr"), f"file name {path}")
    evs = events(path)
    check(len(evs) == record_count(path), f"read {len(evs)} events of {record_count(path)} records (a bad CRC?)")
    check(evs[0].file_version == "brain.Event:2", "the first record names the version")
    values = [(e, v) for e in evs[1:] for v in e.summary.value]
    by_kind = {}
    for e, v in values:
        by_kind.setdefault(v.WhichOneof("value"), []).append((e, v))
    # scalars
    got = by_kind.get("simple_value", [])
    check(len(got) == len(exp["scalars"]), f"{len(got)} scalars, expected {len(exp['scalars'])}")
    for (e, v), s in zip(got, exp["scalars"]):
        want = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}.get(s["value"], s["value"])
        check(v.tag == s["tag"] and e.step == s["step"] and same(v.simple_value, f32(want)),
              f"scalar {v.tag}@{e.step} = {v.simple_value}, expected {s}")
        if "walltime" in s:
            check(e.wall_time == s["walltime"], f"walltime {e.wall_time}")
    # histograms
    got = by_kind.get("histo", [])
    check(len(got) == len(exp["histograms"]), "histogram count")
    for (e, v), hx in zip(got, exp["histograms"]):
        x = np.array(hx["values"], dtype=np.float64)
        if hx["bins"] == "tensorflow":
            edges = np.array(tf_edges())
        else:
            lo, hi = x.min(), x.max()
            if lo == hi:
                lo, hi = lo - 0.5, hi + 0.5
            edges = np.array([lo + (hi - lo) * i / hx["bins"] for i in range(hx["bins"] + 1)])
            edges[-1] = hi
        counts, _ = np.histogram(x, bins=edges)
        nz = np.nonzero(counts)[0]
        first, last = nz[0], nz[-1]
        h = v.histo
        s = ss = 0.0
        for t in hx["values"]:
            s += t
            ss += t * t
        check(v.tag == hx["tag"] and e.step == hx["step"], f"histogram {v.tag}@{e.step}")
        check(h.num == len(x) and h.min == x.min() and h.max == x.max() and h.sum == s and h.sum_squares == ss,
              f"histogram {v.tag}: num/min/max/sum/sum_squares {h.num} {h.min} {h.max} {h.sum} {h.sum_squares}")
        check(list(h.bucket) == [float(c) for c in counts[first:last + 1]], f"histogram {v.tag}: counts")
        check(list(h.bucket_limit) == [float(b) for b in edges[first + 1:last + 2]], f"histogram {v.tag}: bucket limits")
    # images
    got = by_kind.get("image", [])
    check(len(got) == len(exp["images"]), "image count")
    for (e, v), im in zip(got, exp["images"]):
        c, h, w, px = png_pixels(v.image.encoded_image_string)
        check(v.tag == im["tag"] and e.step == im["step"] and v.image.colorspace == im["channels"], f"image {v.tag}")
        check((c, h, w) == (im["channels"], im["height"], im["width"]) and (v.image.height, v.image.width) == (h, w), f"image {v.tag}: size")
        check(px == im["pixels"], f"image {v.tag}: pixels")
    # text and hparams (tensor values tagged for a plugin)
    texts = [(e, v) for e, v in by_kind.get("tensor", []) if v.metadata.plugin_data.plugin_name == "text"]
    check(len(texts) == 1 and texts[0][1].tensor.string_val[0].decode("utf-8") == exp["texts"][0]["text"] and
          texts[0][0].step == exp["texts"][0]["step"] and texts[0][1].tag == "notes", "text")
    run = glob.glob(os.path.join(top, exp["hparams"]["run"], "events.out.tfevents.*"))
    check(len(run) == 1, "the hparams run's file")
    hv = [v for e in events(run[0])[1:] for v in e.summary.value]
    plugin = {v.tag: plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content) for v in hv
              if v.metadata.plugin_data.plugin_name == "hparams"}
    ex, ssi, sei = plugin["_hparams_/experiment"].experiment, plugin["_hparams_/session_start_info"].session_start_info, \
        plugin["_hparams_/session_end_info"].session_end_info
    types = {i.name: i.type for i in ex.hparam_infos}
    check(types == {"lr": 3, "layers": 3, "optimizer": 1, "batch_norm": 2}, f"hparam types {types}")
    check(sorted(m.name.tag for m in ex.metric_infos) == sorted(exp["hparams"]["metrics"]), "metric tags")
    for k, want in exp["hparams"]["hparams"].items():
        pv = ssi.hparams[k]
        kind = pv.WhichOneof("kind")
        gotv = getattr(pv, kind)
        check(gotv == want and type(gotv) == type(want) or (kind == "number_value" and gotv == want), f"hparam {k}: {gotv} vs {want}")
    check(sei.status == 1, "session end status")
    ms = {v.tag: v.simple_value for v in hv if v.WhichOneof("value") == "simple_value"}
    check(ms == {k: f32(x) for k, x in exp["hparams"]["metrics"].items()}, f"hparam metrics {ms}")
    # what TensorBoard's UI loads
    acc = EventAccumulator(top, size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    check(set(tags["scalars"]) >= {"loss/train", "loss/tensor", "lr"} or set(tags.get("tensors", [])) >= {"loss/train", "lr"},
          f"EventAccumulator scalars: {tags}")
    check(set(tags["histograms"]) >= {h["tag"] for h in exp["histograms"]}, f"EventAccumulator histograms: {tags['histograms']}")
    check(set(tags["images"]) >= {i["tag"] for i in exp["images"]}, f"EventAccumulator images: {tags['images']}")
    for f in failures:
        print("FAIL:", f)
    n = 2 + len(exp["scalars"]) + len(exp["histograms"]) + len(exp["images"]) + 2
    print(f"{n - len(failures)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
