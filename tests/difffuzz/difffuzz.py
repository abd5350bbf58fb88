#!/usr/bin/env python3
"""Differential fuzzer: random programs of tensor ops run in nnrun and in PyTorch, compared.

    tests/difffuzz/difffuzz.py --nnrun build/bin/nnrun --seeds 0:300      # the CI range (seconds)
    tests/difffuzz/difffuzz.py --nnrun build/bin/nnrun --seeds 0:10000    # long mode (1-2 minutes)
    tests/difffuzz/difffuzz.py --nnrun build/bin/nnrun --seed 123 --verbose   # one program, both languages

Run it with a python3 that has torch (Debian's python3-torch is /usr/bin/python3; the python3 first on
PATH may lack it). Last line: `N programs, N agreed, N both-raised, N disagreements`; exit status 1 on
a disagreement or a crash of nnrun, 77 when PyTorch cannot be imported (the test is then skipped), 2 on
bad usage or when nnrun cannot run at all.

How it works (see also tests/difffuzz/README.md)
------------------------------------------------
A *program* is a list of steps over named values v1, v2, ...; each step is kept as JSON:

    {"op": "binary.add", "outs": ["v3"], "ins": ["v1", "v2"], "cls": "exact",
     "lua": "v3 = v1:add(v2)", "py": "v3 = torch.add(v1, v2)", ...}

Programs are generated from a seed, step by step, *with PyTorch in the loop*: each candidate step is
rendered in both languages and executed in PyTorch at once, so that the generator knows every value's
shape, dtype and contents when it chooses the next step. That is how it avoids undefined behaviour
(integer overflow of i32/i64, float-to-integer casts out of range, NaN to integer) and, in gradient
programs, points where the derivative is not defined (|x| at 0, ties of max, clamp at a bound): such
candidates are dropped before they run. A step PyTorch raises on ends the program; nnrun must raise
at that same step. The PyTorch results of the generation run are the reference.

All programs of a batch are written to one Lua file that tests/difffuzz/run_programs.lua executes
with ONE nnrun process (each step under pcall), writing every step's outputs (dtype, shape, strides,
storage offset, values in %.17g), the values of all names after the last step (so writes through
views and aliasing are checked) and, in gradient programs, the leaves' .grad. A crash of nnrun (a
signal, or a hang) is a finding: the program that was running is identified from the flushed
results, rerun alone to confirm, and the batch continues after it.

Comparison: dtypes (PyTorch's names mapped to nnrun's), shapes, values within a tolerance for the
dtype and kind of op (bitwise for exact ops: copies, views, min/max, f32/f64 + - * / of equal
dtypes, casts; a few ulps for transcendental functions; reductions and products scaled by their
length and the inputs' magnitude), indices shifted by one (nnrun's are 1-based), strides and offsets
of views (dims of size > 1 only), and errors (both raise, or neither). A difference downstream of a
value that already differed within tolerance is not counted where it can be an amplification of it
(a comparison, an index, a cast to an integer of a value that differs in its last bit). Known
intended differences are in ALLOW_LIST below, each with its reason; every allowed difference is
counted and reported, none is skipped silently.
"""
import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_PYTHON_HINT = "PyTorch (Debian's python3-torch, /usr/bin/python3)"

torch = None  # imported in main(); exit 77 without it
np = None

DTYPES = ["f32", "f64", "f16", "bf16", "i8", "u8", "i32", "i64", "bool"]
FLOATS = ["f32", "f64", "f16", "bf16"]
INTS = ["i8", "u8", "i32", "i64"]
PDT = {"f32": "torch.float32", "f64": "torch.float64", "f16": "torch.float16", "bf16": "torch.bfloat16",
       "i8": "torch.int8", "u8": "torch.uint8", "i32": "torch.int32", "i64": "torch.int64", "bool": "torch.bool"}
PY_CAST = {"f32": "float", "f64": "double", "f16": "half", "bf16": "bfloat16", "i64": "long", "i32": "int",
           "u8": "byte", "i8": "char", "bool": "bool"}
INT_RANGE = {"i8": (-128, 127), "u8": (0, 255), "i16": (-32768, 32767), "i32": (-2 ** 31, 2 ** 31 - 1),
             "i64": (-2 ** 63, 2 ** 63 - 1), "bool": (0, 1)}
# relative tolerance of one rounding in each float dtype (about 2 ulps)
RT = {"f64": 4e-16 * 4, "f32": 1.2e-7 * 4, "f16": 1e-3 * 2, "bf16": 7.9e-3 * 2}
# PyTorch 1.13's cpu kernels missing for f16 (and bf16 prod): these ops are computed in f32 on the
# PyTorch side and rounded, which is what a correct f16 kernel gives for one op
HALF_MISSING = {"exp", "log", "sqrt", "tanh", "sigmoid", "relu", "sin", "cos", "erf", "clamp", "prod",
                "softmax", "log_softmax", "matmul", "mm", "bmm", "dot", "gelu", "layer_norm", "linear",
                "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "cross_entropy", "elu",
                "leaky_relu", "bce"}

# -----------------------------------------------------------------------------------------------
# The allow-list: differences nnrun intends. Each entry: id, the reason, and a predicate over a
# mismatch m (m["kind"], m["op"], m["torch"], m["nnr"], m["step"]). A matched mismatch is counted
# under its id and printed in the summary; nothing else is skipped.
# -----------------------------------------------------------------------------------------------


def _terr(m, *needles):
    return any(n in (m.get("torch_error") or "") for n in needles)


def _nerr(m, *needles):
    return any(n in (m.get("nnr_error") or "") for n in needles)


ALLOW_LIST = [
    dict(id="i16-as-i32",
         reason="nnrun has no int16: u8 with i8 promotes to i32 where PyTorch gives int16 (docs/lua-api.md, "
                "'Type promotion follows PyTorch: ... u8 + i8 -> i32'); the values are still compared",
         match=lambda m: m["kind"] == "dtype" and m["torch"] == "i16" and m["nnr"] == "i32"),
    dict(id="lua-number-keeps-dtype",
         reason="a Lua number cannot say whether it is 2 or 2.0, so nnrun documents that 'a Lua number keeps the "
                "tensor's dtype unless it needs a float'; PyTorch promotes bool (+ int scalar) to int64",
         match=lambda m: m["kind"] in ("dtype", "nnr-accepts", "value") and m.get("bool_int_scalar")),
    dict(id="stale-view",
         reason="nnrun refuses an op on a view whose base was changed in place under autograd after the view was made "
                "('an input is a view whose base was changed in place'); PyTorch re-bases the view's history on the base's "
                "(docs/lua-api.md, autograd); nnrun's gradient used to follow the old values",
         match=lambda m: m["kind"] == "nnr-raises" and _nerr(m, "an input is a view whose base was changed in place")),
    dict(id="half-linear-bias",
         reason="nnrun's linear in f16/bf16, where the backend has no fused LINEAR for the dtype, rounds the product to "
                "the half dtype and then adds the bias (two roundings, core/ops/linalg.c linear_composed); PyTorch adds the "
                "bias in f32 and rounds once: they differ by one rounding where the sum cancels",
         match=lambda m: m["kind"] == "value" and m["op"] == "F.linear" and m.get("ndtype") in ("f16", "bf16")),
    dict(id="matmul-float-only",
         reason="nnrun's matmul/mm/bmm/dot/linear are for f32, f64, f16 and bf16 only (docs/lua-api.md: "
                "'f32 and f64 through OpenBLAS'; the error names the dtypes); PyTorch has integer matmul on cpu",
         match=lambda m: m["kind"] == "nnr-raises" and _nerr(m, "is not supported (expected f32, f64, f16 or bf16)")),
    dict(id="i32-index",
         reason="nnrun takes i32 index tensors as well as i64 (docs/lua-api.md: 'take 1-based int64 (or i32) "
                "index tensors'); PyTorch's gather/scatter_add require int64",
         match=lambda m: m["kind"] == "nnr-accepts" and _terr(m, "Expected dtype int64 for index",
                                                               "scatter(): Expected dtype int64")),
    dict(id="torch-lacks-kernel",
         reason="PyTorch 1.13's cpu has no kernel for this dtype (e.g. softmax or argmax of integers or bool) "
                "where nnrun computes one (float math on integers gives f32, docs/lua-api.md); nothing to "
                "compare against",
         match=lambda m: m["kind"] == "nnr-accepts" and bool(re.search(
             r"not implemented for '(Long|Int|Char|Byte|Short|Bool|Half|BFloat16)'", m.get("torch_error") or ""))),
    dict(id="dtype-coverage",
         reason="nnrun refuses on purpose, naming the dtypes it has, some dtypes PyTorch computes (e.g. bf16 "
                "avg_pool2d and batch_norm: 'dtype bf16 is not supported (expected f32 or f64 ...)')",
         match=lambda m: m["kind"] == "nnr-raises" and bool(re.search(r"dtype \w+ is not supported \(expected",
                                                                     m.get("nnr_error") or ""))),
    dict(id="0-d-dims",
         reason="nnrun gives a 0-dimensional tensor no dimension to name ('dimension 1 given for a 0-dimensional "
                "tensor', on purpose in tensor.lua's cdim); PyTorch takes dim 0 or -1 of a 0-d tensor as a 1-d one",
         match=lambda m: m["kind"] == "nnr-raises" and _nerr(m, "-dimensional tensor") and
         bool(re.search(r"dimension -?\d+ given for a 0-dimensional tensor", m.get("nnr_error") or ""))),
    dict(id="pool-4d-only",
         reason="nnrun's pools take batched [N, C, H, W] input only and say so ('expected a 4-d input'); PyTorch "
                "also takes an unbatched [C, H, W]",
         match=lambda m: m["kind"] == "nnr-raises" and _nerr(m, "expected a 4-d input")),
    dict(id="bool-arith",
         reason="nnrun refuses arithmetic it does not define for bool tensors ('not defined for bool tensors', "
                "e.g. clamp), where PyTorch computes some",
         match=lambda m: m["kind"] == "nnr-raises" and _nerr(m, "not defined for bool tensors")),
    dict(id="scatter-add-index-shape",
         reason="nnrun's scatter_add wants index and src of one shape (docs/plugin-abi.md: 'index and src share a "
                "shape'); PyTorch also takes an index smaller than src",
         match=lambda m: m["kind"] == "nnr-raises" and _nerr(m, "scatter_add: index") and _nerr(m, "do not fit")),
    dict(id="inplace-no-narrowing",
         reason="nnrun documents that an in-place op whose result needs a wider dtype than the target's is an error "
                "(docs/lua-api.md: 'add_: result type f32 cannot be stored in place in a i64 tensor'), also between "
                "floats (f32 into bf16); PyTorch casts float results into any float target",
         match=lambda m: m["kind"] == "nnr-raises" and bool(re.search(r"result type \w+ cannot be stored in place",
                                                                     m.get("nnr_error") or ""))),
    dict(id="where-bool-condition",
         reason="nnrun's where takes a bool condition only ('condition must be a bool tensor'); PyTorch 1.13 still "
                "takes a deprecated uint8 one",
         match=lambda m: m["kind"] == "nnr-raises" and _nerr(m, "condition must be a bool tensor")),
    dict(id="pow-of-minus-inf",
         reason="nnrun's pow follows C99 for a base of -inf (pow(-inf, y) = +0 for y < 0, +inf for y > 0 not an odd "
                "integer); PyTorch 1.13's vectorized cpu pow gives nan there",
         match=lambda m: m["kind"] == "value" and m.get("neg_inf_base") and m.get("tval") != m.get("tval")),
    dict(id="contiguous-results",
         reason="nnrun's elementwise results are contiguous where PyTorch keeps a permuted input's layout, so view() "
                "of such a result works in nnrun and is refused by PyTorch (layout, not values)",
         match=lambda m: m["kind"] == "nnr-accepts" and _terr(m, "view size is not compatible with input tensor")),
    dict(id="mask-bool-only",
         reason="nnrun's masked_fill takes a bool mask only ('mask must be a bool tensor'); PyTorch 1.13 still "
                "takes others",
         match=lambda m: m["kind"] == "nnr-raises" and _nerr(m, "mask must be a bool tensor")),
    dict(id="masked-fill-expanded",
         reason="nnrun refuses masked_fill_ into an expanded (stride-0) view like other in-place writes; PyTorch "
                "1.13 still does it with a deprecation warning ('Use of masked_fill_ on expanded tensors is "
                "deprecated')",
         match=lambda m: m["kind"] == "nnr-raises" and m["op"].startswith("masked_fill_") and
         _nerr(m, "refers to a single memory location")),
    dict(id="saved-tensor-strategy",
         reason="PyTorch refused backward because an in-place op changed a tensor one of its nodes saved; nnrun's "
                "node saved a different tensor (e.g. relu's input, not its output) and computed the gradient: it "
                "matches PyTorch's gradient of the same program with every saved tensor cloned at save time",
         match=lambda m: m["kind"] == "saved-tensor-strategy"),
    dict(id="matmul-promotes",
         reason="nnrun's matmul, mm, bmm and dot promote mixed float dtypes as its elementwise ops do (docs/lua-api.md, "
                "'Linear algebra'); PyTorch refuses them ('expected scalar type Float but found Double')",
         match=lambda m: m["kind"] == "nnr-accepts" and m["op"] in ("matmul", "mm", "bmm", "dot") and
         _terr(m, "expected scalar type", "expected both vectors to have same dtype")),
    dict(id="saves-more",
         reason="nnrun's div, max(dim) and min(dim) backwards keep their output (docs/reliability.md, 'the fuzzer's "
                "intended differences'); PyTorch's keep other tensors, so an in-place change of that output "
                "before backward is an error in nnrun and not in PyTorch",
         match=lambda m: m["kind"] == "nnr-raises" and bool(re.search(r"(DivBackward|MaxBackward|MinBackward): a tensor of shape",
                                                                     m.get("nnr_error") or ""))),
    dict(id="half-composed",
         reason="nnrun composes binary_cross_entropy_with_logits from ops in the input dtype (f16/bf16 round after "
                "each op); PyTorch computes it in f32 and rounds once (docs/reliability.md)",
         match=lambda m: m["kind"] == "value" and m["op"] == "F.binary_cross_entropy_with_logits" and
         m.get("ndtype") in ("f16", "bf16")),
    dict(id="split-views-inplace",
         reason="nnrun lets a piece of split/chunk be written in place (its gradient is right); PyTorch refuses "
                "in-place changes to any output of a multi-output view op",
         match=lambda m: m["kind"] == "nnr-accepts" and _terr(m, "SplitBackward", "UnbindBackward")),
    dict(id="view-of-grad-inplace",
         reason="nnrun refuses in-place writes to a view of a tensor that requires grad (docs/lua-api.md: "
                "'In-place writes to a *view* of a tensor that requires grad are refused (clone first)')",
         match=lambda m: m["kind"] == "nnr-raises" and _nerr(m, "view") and m.get("grad_view_inplace")),
    dict(id="embedding-result-view",
         reason="nnrun's F.embedding returns a view of its gathered rows, so an in-place write to it while it "
                "requires grad is refused (clone first, docs/lua-api.md); PyTorch's result is a new tensor",
         match=lambda m: m["kind"] == "nnr-raises" and not m.get("grad_view_inplace") and
         _nerr(m, "in-place change of a view of a tensor that requires grad")),
]

# -----------------------------------------------------------------------------------------------
# rendering helpers
# -----------------------------------------------------------------------------------------------


def ld(d):
    """a 0-based (or negative) PyTorch dim/index as nnrun's 1-based one"""
    return d + 1 if d >= 0 else d


def lnum(x):
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x)
    if x != x:
        return "(0/0)"
    if x == math.inf:
        return "math.huge"
    if x == -math.inf:
        return "(-math.huge)"
    r = repr(float(x))
    return r


def pnum(x):
    if isinstance(x, bool):
        return "True" if x else "False"
    if isinstance(x, int):
        return str(x)
    if x != x:
        return "float('nan')"
    if x == math.inf:
        return "float('inf')"
    if x == -math.inf:
        return "float('-inf')"
    return repr(float(x))


def llit(v):
    if isinstance(v, list):
        return "{" + ", ".join(llit(e) for e in v) + "}"
    return lnum(v)


def plit(v):
    if isinstance(v, list):
        return "[" + ", ".join(plit(e) for e in v) + "]"
    return pnum(v)


def lshape(s):
    return "{" + ", ".join(str(x) for x in s) + "}"


def pshape(s):
    return "(" + ", ".join(str(x) for x in s) + ("," if len(s) == 1 else "") + ")"


def dname(t):
    """nnrun's name of a torch tensor's dtype"""
    return {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16",
            torch.int8: "i8", torch.uint8: "u8", torch.int16: "i16", torch.int32: "i32", torch.int64: "i64",
            torch.bool: "bool"}.get(t.dtype, str(t.dtype))


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


class Reject(Exception):
    """a candidate step that would run into undefined behaviour or a kink: drop it"""


class Step(dict):
    pass


class Var:
    __slots__ = ("name", "group", "index", "layout", "leaf", "rg")

    def __init__(self, name, group, index=False, layout=False, leaf=False, rg=False):
        self.name, self.group, self.index, self.layout, self.leaf, self.rg = name, group, index, layout, leaf, rg


# -----------------------------------------------------------------------------------------------
# recording PyTorch values in the form run_programs.lua writes nnrun's
# -----------------------------------------------------------------------------------------------


def rec_of(v):
    if torch.is_tensor(v):
        t = v.detach()
        vals = t.to(torch.float64).reshape(-1).numpy().copy() if t.numel() > 0 else np.zeros(0)
        return ("T", dname(t), tuple(t.shape), tuple(t.stride()), t.storage_offset(), vals)
    if isinstance(v, bool):
        return ("N", 1.0 if v else 0.0)
    if isinstance(v, (int, float)):
        return ("N", float(v))
    if v is None:
        return ("nil",)
    return ("O", type(v).__name__)


def parse_value(fields):
    kind = fields[0]
    if kind == "T":
        dt, sizes, strides, off, vals = fields[1], fields[2], fields[3], fields[4], fields[5] if len(fields) > 5 else ""
        shape = tuple(int(x) for x in sizes.split(",")) if sizes else ()
        st = tuple(int(x) for x in strides.split(",")) if strides else ()
        arr = np.array([float(x) for x in vals.split()] if vals else [], dtype=np.float64)
        return ("T", dt, shape, st, int(off), arr)
    if kind == "N":
        return ("N", float(fields[1]))
    if kind == "nil":
        return ("nil",)
    if kind == "X":
        return ("X", "\t".join(fields[1:]))
    return ("O", fields[1] if len(fields) > 1 else "?")


# -----------------------------------------------------------------------------------------------
# the generator
# -----------------------------------------------------------------------------------------------

UNARY = ["neg", "abs", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "sin", "cos", "sign", "reciprocal",
         "logical_not", "erf"]
TRANS = {"exp", "log", "tanh", "sigmoid", "sin", "cos", "erf", "pow", "sqrt"}
ARITH = ["add", "sub", "mul", "div", "pow", "maximum", "minimum"]
CMP = ["eq", "ne", "lt", "le", "gt", "ge"]
LOGIC = ["logical_and", "logical_or"]
LUA_OPS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "^"}
PY_OPS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**", "eq": "==", "ne": "!=", "lt": "<",
          "le": "<=", "gt": ">", "ge": ">="}
PY_REFLECT = {"eq": "==", "ne": "!=", "lt": ">", "le": ">=", "gt": "<", "ge": "<="}  # s OP t as t OP' s
GRAD_UNARY = ["neg", "abs", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "sin", "cos", "reciprocal", "erf",
              "sign"]


class Gen:
    def __init__(self, seed, kind=None):
        self.seed = seed
        self.R = random.Random(seed * 7919 + 17)
        self.kind = kind or ("grad" if seed % 4 == 3 else "fwd")
        self.ns = {"torch": torch, "F": torch.nn.functional}
        self.vars = {}
        self.steps = []
        self.trec = {"steps": {}, "error": None, "final": {}, "grads": {}}
        self.count = 0
        self.groups = 0
        self.error = None

    # -- bookkeeping -------------------------------------------------------------------------
    def new(self):
        self.count += 1
        return "v%d" % self.count

    def val(self, name):
        return self.ns[name]

    def tensors(self, pred=None, index=False):
        out = []
        for n, v in self.vars.items():
            if v.index != index:
                continue
            t = self.ns.get(n)
            if not torch.is_tensor(t):
                continue
            if pred is None or pred(t):
                out.append(n)
        return out

    def pick(self, pred=None, index=False):
        c = self.tensors(pred, index)
        if not c:
            return None
        # favour recent values: chains of ops
        w = [1.0 + 2.0 * i / len(c) for i in range(len(c))]
        return self.R.choices(c, weights=w)[0]

    # -- running a step in PyTorch ------------------------------------------------------------
    def execute(self, st):
        """runs st['py'] in PyTorch; returns True when it ran, False when it raised (the program ends)"""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exec(st["py"], self.ns)
        except (NameError, SyntaxError, AttributeError, KeyError) as e:
            if st.get("replay"):
                self.error = (len(self.steps) + 1, "%s: %s" % (type(e).__name__, e))
                self.steps.append(st)
                self.trec["error"] = self.error
                return False
            raise RuntimeError("difffuzz generator bug in step %r: %s" % (st["py"], e))
        except Exception as e:  # PyTorch raised: the expected outcome is an error at this step
            self.steps.append(st)
            self.error = (len(self.steps), "%s: %s" % (type(e).__name__, str(e).split("\n")[0]))
            self.trec["error"] = self.error
            return False
        self.steps.append(st)
        k = len(self.steps)
        rec = {}
        for o in st["outs"]:
            rec[o] = rec_of(self.ns.get(o))
        self.trec["steps"][k] = rec
        # metadata of the outputs
        for o in st["outs"]:
            v = self.ns.get(o)
            if o in self.vars and o in st.get("keep", ()):  # in-place: same object
                continue
            alias = st.get("alias")
            grp = self.vars[alias].group if alias in self.vars else None
            if grp is None and torch.is_tensor(v) and v.numel():  # a result that shares an input's storage
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for i in st["ins"]:
                        u = self.ns.get(i)
                        if i in self.vars and torch.is_tensor(u) and u.numel() and \
                                u.storage().data_ptr() == v.storage().data_ptr():
                            grp = self.vars[i].group
                            break
            if grp is None:
                self.groups += 1
                grp = self.groups
            layout = False
            if torch.is_tensor(v):
                if st.get("layout") == "contig":
                    layout = True
                elif st.get("layout") == "view" and alias in self.vars and self.vars[alias].layout:
                    layout = True
                elif st.get("layout") == "view_if_shared" and alias in self.vars and self.vars[alias].layout:
                    a = self.ns[alias]
                    layout = v.numel() == 0 or (a.numel() > 0 and v.storage().data_ptr() ==
                                                 a.storage().data_ptr())
            self.vars[o] = Var(o, grp, index=o in st.get("idx", ()), layout=layout,
                               leaf=st["op"] == "input" and st.get("rg", False),
                               rg=torch.is_tensor(v) and v.requires_grad)
        return True

    def finish(self):
        if self.error is None:
            for n in self.final_names():
                self.trec["final"][n] = rec_of(self.ns.get(n))
            for n in self.grad_names():
                self.trec["grads"][n] = rec_of(self.ns[n].grad)

    def final_names(self):
        return [n for n in self.vars if torch.is_tensor(self.ns.get(n)) or isinstance(self.ns.get(n), (int, float))]

    def grad_names(self):
        return [n for n, v in self.vars.items() if v.leaf]

    # -- values --------------------------------------------------------------------------------
    def rand_shape(self, nd=None, maxn=60, allow0=True):
        R = self.R
        if nd is None:
            nd = R.choices([0, 1, 2, 3, 4], weights=[1, 3, 5, 3, 1.5])[0]
        while True:
            s = []
            for _ in range(nd):
                s.append(R.choices([0, 1, 2, 3, 4, 5, 6], weights=[0.25 if allow0 else 0, 2, 3, 3, 2, 1.2, 0.6])[0])
            if numel(s) <= maxn:
                return s

    def rand_values(self, dt, shape, lo=None, hi=None, special=None, positive=False, distinct=False):
        R = self.R
        n = numel(shape)
        if dt == "bool":
            vals = [R.random() < 0.5 for _ in range(n)]
            if n and not any(vals):
                vals[R.randrange(n)] = True
        elif dt in INTS:
            if lo is None:
                lo, hi = {"i8": (-8, 8), "u8": (0, 16), "i32": (-40, 40), "i64": (-40, 40)}[dt]
            vals = [R.randint(lo, hi) for _ in range(n)]
            if n and not any(vals) and hi > 0:
                vals[R.randrange(n)] = max(1, lo)
        else:
            style = R.random()
            vals = []
            for _ in range(n):
                if positive:
                    x = R.uniform(0.2, 3.0)
                elif style < 0.4:
                    x = R.gauss(0, 1.5)
                elif style < 0.7:
                    x = R.uniform(-3, 3)
                elif style < 0.85:
                    x = R.choice([-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0])  # ties and exact values
                else:
                    x = R.gauss(0, 1) * R.choice([1e-3, 10.0, 100.0])
                vals.append(x)
            if special is None:
                special = self.kind == "fwd" and not self.no_special and R.random() < 0.12
            if special and n:
                for _ in range(R.randint(1, max(1, n // 4))):
                    vals[R.randrange(n)] = R.choice([math.nan, math.inf, -math.inf, -0.0, 0.0])
            if n and all(v == 0 for v in vals):
                vals[R.randrange(n)] = 1.5
            if distinct:
                vals = [v + 1e-3 * i for i, v in enumerate(vals)]
        # round to the dtype, then read back exactly (every literal is exact in its dtype)
        t = torch.tensor(vals, dtype=getattr(torch, {"f32": "float32", "f64": "float64", "f16": "float16",
                                                     "bf16": "bfloat16", "i8": "int8", "u8": "uint8",
                                                     "i32": "int32", "i64": "int64", "bool": "bool"}[dt]))
        if dt == "bool":
            flat = [bool(x) for x in t.tolist()]
        elif dt in INTS:
            flat = [int(x) for x in t.tolist()]
        else:
            flat = [float(x) for x in t.to(torch.float64).tolist()]
        return flat

    @staticmethod
    def nest(flat, shape):
        if not shape:
            return flat[0]
        if len(shape) == 1:
            return list(flat)
        step = numel(shape[1:])
        return [Gen.nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]

    def input_step(self, dt, shape, index_hi=None, rg=False, **kw):
        """a new leaf from literal values; index_hi: 0-based indices in [lo, index_hi) (shifted in Lua)"""
        if dt not in PDT:
            raise Reject()      # a dtype only PyTorch has (i16 from its own promotion): no literal for nnrun
        name = self.new()
        n = numel(shape)
        opts_l = '{dtype = "%s"%s}' % (dt, ", requires_grad = true" if rg else "")
        opts_p = "dtype=%s%s" % (PDT[dt], ", requires_grad=True" if rg else "")
        idx = index_hi is not None
        if n == 0:
            lua = "%s = nnr.zeros(%s, %s)" % (name, lshape(shape), opts_l)
            py = "%s = torch.zeros(%s, %s)" % (name, pshape(shape), opts_p)
        else:
            if idx:
                lo = kw.pop("index_lo", 0)
                flat = [self.R.randrange(lo, index_hi) if index_hi > lo else lo for _ in range(n)]
            else:
                flat = self.rand_values(dt, shape, **kw)
            lua = "%s = nnr.tensor(%s, %s)" % (name, llit(self.nest([x + 1 for x in flat] if idx else flat, shape)),
                                               opts_l)
            py = "%s = torch.tensor(%s, %s)" % (name, plit(self.nest(flat, shape)), opts_p)
        return Step(op="input", outs=[name], ins=[], lua=lua, py=py, cls="exact", idx=[name] if idx else [],
                    layout="contig", rg=rg)

    # -- shapes for a second operand -------------------------------------------------------------
    def bshape(self, shape, to_target=False):
        """a shape that broadcasts with shape (to it, when to_target)"""
        R = self.R
        s = list(shape)
        drop = R.randint(0, len(s)) if R.random() < 0.4 else 0
        s = s[drop:]
        s = [1 if R.random() < 0.3 else x for x in s]
        if not to_target and R.random() < 0.15 and len(s) < 5:
            s = [R.randint(1, 3)] + s if len(s) == len(shape) else s
        return s

    def add_input(self, dt, shape, **kw):
        """a new input, run at once (a candidate step needs its operands' values); returns its name"""
        st = self.input_step(dt, shape, **kw)
        if not self.execute(st):
            raise RuntimeError("difffuzz: an input step raised in PyTorch: %r (%s)" % (st["py"], self.error))
        return st["outs"][0]

    def other_operand(self, a, to_target=False, dtypes=None, same_dtype_p=0.7, fresh_p=0.55):
        """an existing value or a new input broadcast-compatible with a (to a's shape when to_target)"""
        R = self.R
        at = self.val(a)
        target = tuple(at.shape)

        def ok(t):
            try:
                s = torch.broadcast_shapes(tuple(t.shape), target)
            except RuntimeError:
                return False
            return (not to_target) or tuple(s) == target

        if R.random() > fresh_p:
            b = self.pick(lambda t: ok(t) and (dtypes is None or dname(t) in dtypes))
            if b is not None:
                return b
        if dtypes:
            dt = dname(at) if dname(at) in dtypes and R.random() < same_dtype_p else R.choice(dtypes)
        else:
            dt = dname(at) if R.random() < same_dtype_p else R.choice(DTYPES)
        if dt not in DTYPES:
            dt = "i32"
        return self.add_input(dt, self.bshape(target, to_target))

    # -- checks against undefined behaviour ------------------------------------------------------------
    def int_ok(self, ref, dt):
        """ref: the exact result in float64; dt: the integer dtype it lands in"""
        if dt not in INT_RANGE or dt == "bool":
            return True
        if ref.numel() == 0:
            return True
        if not bool(torch.isfinite(ref).all()):
            raise Reject()
        lo, hi = INT_RANGE[dt]
        if dt in ("i8", "u8"):  # wraps (defined: implementation-defined conversion, as gcc and PyTorch do)
            lo, hi = -2 ** 31, 2 ** 31 - 1
        if bool((ref < lo).any()) or bool((ref > hi).any()) or bool((ref.abs() > 2 ** 52).any()):
            raise Reject()
        return True

    def cast_ok(self, src, dt):
        """a float -> integer conversion must be in range (C's UB otherwise)"""
        if dname(src) in FLOATS and dt in INTS:
            x = src.detach().to(torch.float64)
            if x.numel() and not bool(torch.isfinite(x).all()):
                raise Reject()
            lo, hi = INT_RANGE[dt]
            tr = torch.trunc(x)
            if x.numel() and (bool((tr < lo).any()) or bool((tr > hi).any())):
                raise Reject()

    def scale_of(self, *names):
        m = 0.0
        for n in names:
            if n is None:
                continue
            t = self.val(n) if isinstance(n, str) else n
            if torch.is_tensor(t):
                t = t.detach()
                if t.numel() and t.dtype != torch.bool:
                    x = t.to(torch.float64).abs()
                    x = x[torch.isfinite(x)]
                    if x.numel():
                        m = max(m, float(x.max()))
            elif isinstance(t, (int, float)) and math.isfinite(t):
                m = max(m, abs(float(t)))
        return m

    # grad programs: no kinks near the values the op sees
    def kink(self, x, at=0.0, eps=1e-4):
        x = x.detach().to(torch.float64)
        return x.numel() > 0 and bool(((x - at).abs() < eps * (1 + abs(at))).any())

    def ties(self, t, dim):
        x = t.detach().to(torch.float64)
        if x.numel() == 0:
            return False
        if dim is None:
            x = x.reshape(-1)
            dim = 0
        elif isinstance(dim, tuple):
            ds = [d % x.dim() for d in dim]
            rest = [d for d in range(x.dim()) if d not in ds]
            x = x.permute(rest + ds).reshape([x.shape[d] for d in rest] + [-1])
            dim = -1
        s, _ = torch.sort(x, dim=dim, descending=True)
        if s.shape[dim] < 2:
            return False
        d1 = (s.narrow(dim, 0, 1) - s.narrow(dim, 1, 1)).abs()
        d2 = (s.narrow(dim, -1, 1) - s.narrow(dim, -2, 1)).abs()
        return bool((d1 < 1e-4).any()) or bool((d2 < 1e-4).any())

    # -----------------------------------------------------------------------------------------
    # op generators: each builds one step (creating any new inputs it needs at once) or raises Reject
    # -----------------------------------------------------------------------------------------
    def overlapping(self, a, b):
        """b reads memory that the in-place write into a changes, and is not a itself: PyTorch's result then
        depends on its loop order (it refuses only some of these), so such steps are not generated"""
        ta, tb = self.val(a), self.val(b)
        if a == b or not (torch.is_tensor(ta) and torch.is_tensor(tb)) or ta.numel() == 0 or tb.numel() == 0:
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ta.storage().data_ptr() == tb.storage().data_ptr()

    def is_grad_view(self, a):
        """an in-place write to a view of a tensor that requires grad (nnrun refuses those on purpose)"""
        t = self.val(a)
        return bool(self.kind == "grad" and torch.is_tensor(t) and t.requires_grad and t._base is not None)

    def fpick(self):
        """an operand: any value in forward programs, a float one in gradient programs"""
        if self.kind == "grad":
            return self.pick(lambda t: dname(t) in FLOATS)
        return self.pick()

    def S(self, op, outs, ins, lua, py, cls="exact", **kw):
        st = Step(op=op, outs=outs, ins=ins, lua=lua, py=py, cls=cls)
        st["in_dts"] = sorted(set(dname(self.ns[v]) for v in ins if torch.is_tensor(self.ns.get(v))))
        ts = [self.ns[v] for v in ins if torch.is_tensor(self.ns.get(v))]
        st["zero_dim_mix"] = any(t.dim() == 0 for t in ts) and any(t.dim() > 0 for t in ts) and len(st["in_dts"]) > 1
        st.update(kw)
        return st

    def g_unary(self):
        R = self.R
        grad = self.kind == "grad"
        name = R.choice(GRAD_UNARY if grad else UNARY)
        a = self.fpick()
        if a is None:
            raise Reject()
        at = self.val(a)
        dt = dname(at)
        inplace = R.random() < (0.1 if grad else 0.2) and name != "logical_not"
        if grad:
            if self.vars[a].leaf:
                inplace = False
            if name in ("abs", "relu", "sign") and self.kink(at):
                raise Reject()
            if name in ("log", "sqrt") and at.numel() and float(at.detach().min()) < 0.05:
                raise Reject()
            if name == "reciprocal" and self.kink(at, eps=0.05):
                raise Reject()
            if name == "exp" and at.numel() and float(at.detach().max()) > 20:
                raise Reject()
        out = a if inplace else self.new()
        upcast = dt == "f16" and name in HALF_MISSING
        if inplace:
            lua = "%s:%s_()" % (a, name)
            py = "%s.copy_(torch.%s(%s.float()))" % (a, name, a) if upcast else "%s.%s_()" % (a, name)
        else:
            form = R.random()
            if name == "neg" and form < 0.4:
                lua, py = "%s = -%s" % (out, a), "%s = -%s" % (out, a)
            else:
                lua = ("%s = %s:%s()" % (out, a, name)) if form < 0.7 else ("%s = nnr.%s(%s)" % (out, name, a))
                py = "%s = torch.%s(%s)" % (out, name, a)
            if upcast:
                py = "%s = torch.%s(%s.float()).half()" % (out, name, a)
        if dt in INTS and name in ("neg", "abs"):
            self.int_ok(-at.to(torch.float64), dt)
        cls = "trans" if name in TRANS else ("disc" if name in ("sign", "logical_not") else "exact")
        return self.S("unary." + name + ("_" if inplace else ""), [out], [a], lua, py, cls,
                      keep=[a] if inplace else [], alias=a if inplace else None, scale=self.scale_of(a),
                      grad_view_inplace=inplace and self.is_grad_view(a))

    def scalar(self, dt, for_pow=False, boolean=True):
        R = self.R
        if self.kind == "grad":
            return R.choice([0.5, 1.5, 2.0, -0.75, 3.0, 0.3, 2, 3, -1.25])
        if for_pow:
            if dt in INTS or dt == "bool":
                return R.choice([0, 1, 2, 3, 2, 0.5, -1])
            return R.choice([2, 3, 0.5, -1, 2.5, -0.5, 1.5, 0])
        c = R.random()
        if dt == "u8":
            return R.choice([0, 1, 2, 3, 5, 1.5, 0.25])
        if c < 0.45:
            return R.choice([0, 1, 2, 3, -1, -2, 5])
        if c < 0.85:
            return R.choice([0.5, -1.5, 2.25, 0.125, -0.75, 3.5])
        if c < 0.95 or not boolean:
            return R.choice([0.1, -0.3, 1.7, 2.9, 1e-3])
        return R.choice([True, False])

    def g_binary(self):
        R = self.R
        grad = self.kind == "grad"
        name = R.choice(ARITH if grad else ARITH * 3 + CMP * 2 + LOGIC)
        a = self.fpick()
        if a is None:
            raise Reject()
        at = self.val(a)
        dt = dname(at)
        form = "tensor"
        if name not in ("maximum", "minimum", "logical_and", "logical_or"):
            form = R.choices(["tensor", "scalar_r", "scalar_l"], weights=[6, 3, 1.5])[0]
        inplace = form != "scalar_l" and R.random() < (0.12 if grad else 0.25)
        if name in CMP or name in LOGIC:
            inplace = False  # nnrun has no in-place comparisons (eq_ ... refuse on purpose): not generated
        if grad and name in ("maximum", "minimum"):
            inplace = False  # PyTorch has no maximum_, and its out= form does not record a gradient
        if grad and self.vars[a].leaf:
            inplace = False
        b = None
        if form == "tensor":
            b = self.other_operand(a, to_target=inplace and R.random() < 0.9, dtypes=FLOATS if grad else None,
                                   same_dtype_p=0.85 if grad else 0.7)
            other = self.val(b)
            rhs_l = rhs_p = b
        else:
            # (Lua booleans are not numbers: nnrun's arithmetic takes tensors or numbers)
            other = self.scalar(dt, for_pow=name == "pow", boolean=False)
            rhs_l, rhs_p = lnum(other), pnum(other)
            if rhs_l.startswith("-"):  # -0.5 ^ x is -(0.5 ^ x) in both languages
                rhs_l, rhs_p = "(" + rhs_l + ")", "(" + rhs_p + ")"
        # the exact result in float64 (for the integer overflow and gradient checks)
        x = at.detach().to(torch.float64)
        y = other.detach().to(torch.float64) if torch.is_tensor(other) else torch.tensor(float(other), dtype=torch.float64)
        if form == "scalar_l":
            x, y = y, x
        ref = None
        try:
            ref = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow,
                   "maximum": torch.maximum, "minimum": torch.minimum}.get(name, lambda u, v: None)(x, y)
        except RuntimeError:
            pass
        try:
            rdt = dname(torch.empty((), dtype=torch.result_type(at, other)))
        except Exception:
            rdt = None
        if inplace:
            rdt = dt
        if ref is not None and rdt in INT_RANGE and rdt != "bool" and name != "div":
            self.int_ok(ref, rdt)
        if grad:
            if name == "div" and self.kink(y if form != "scalar_l" else x, eps=0.05):
                raise Reject()
            if name == "pow":
                base = x
                if base.numel() and float(base.min()) < 0.1:
                    raise Reject()
                if ref is not None and ref.numel() and (not bool(torch.isfinite(ref).all()) or float(ref.abs().max()) > 1e6):
                    raise Reject()
            if name in ("maximum", "minimum"):
                d = (x - y).abs()
                if d.numel() and float(d.min()) < 1e-4:
                    raise Reject()
        out = a if inplace else self.new()
        f = R.random()
        if inplace and b is not None and self.overlapping(a, b):
            raise Reject()
        if inplace:
            lua, py = "%s:%s_(%s)" % (a, name, rhs_l), "%s.%s_(%s)" % (a, name, rhs_p)
            if name in ("maximum", "minimum"):  # PyTorch has no maximum_: its out= form into the same tensor
                if torch.broadcast_shapes(tuple(at.shape), tuple(other.shape)) != tuple(at.shape):
                    raise Reject()
                py = "torch.%s(%s, %s, out=%s)" % (name, a, rhs_p, a)
        elif form == "scalar_l":
            lua = ("%s = %s %s %s" % (out, rhs_l, LUA_OPS[name], a)) if name in LUA_OPS and f < 0.7 else \
                  ("%s = nnr.%s(%s, %s)" % (out, name, rhs_l, a))
            if name in PY_REFLECT:
                py = "%s = %s %s %s" % (out, a, PY_REFLECT[name], rhs_p)
            else:
                py = "%s = %s %s %s" % (out, rhs_p, PY_OPS[name], a)
        else:
            if name in LUA_OPS and f < 0.4:
                lua = "%s = %s %s %s" % (out, a, LUA_OPS[name], rhs_l)
                py = "%s = %s %s %s" % (out, a, PY_OPS[name], rhs_p)
            else:
                meth = name
                if name in ("maximum", "minimum") and f < 0.55:
                    meth = "max" if name == "maximum" else "min"  # max(u) with a tensor is elementwise
                lua = ("%s = %s:%s(%s)" % (out, a, meth, rhs_l)) if f < 0.75 else \
                      ("%s = nnr.%s(%s, %s)" % (out, name, a, rhs_l))
                py = "%s = torch.%s(%s, %s)" % (out, name, a, rhs_p)
        if name in CMP or name in LOGIC:
            cls = "disc"
        elif name in ("maximum", "minimum"):
            cls = "exact"
        elif name == "pow":
            cls = "trans"
        elif name in ("add", "sub", "mul", "div") and b is not None and dt in ("f32", "f64") and dname(other) == dt:
            cls = "exact"
        else:
            cls = "round"
        bool_int = dt == "bool" and form != "tensor" and isinstance(other, int) and not isinstance(other, bool)
        neg_inf_base = name == "pow" and bool((x == -math.inf).any()) if x.numel() else False
        return self.S("binary.%s%s%s" % (name, "_" if inplace else "", "" if form == "tensor" else "." + form),
                      [out], [a] + ([b] if b else []), lua, py, cls,
                      keep=[a] if inplace else [], alias=a if inplace else None, scale=self.scale_of(a, other),
                      bool_int_scalar=bool_int, grad_view_inplace=inplace and self.is_grad_view(a),
                      neg_inf_base=neg_inf_base)

    def g_clamp(self):
        R = self.R
        grad = self.kind == "grad"
        a = self.fpick()
        if a is None:
            raise Reject()
        at = self.val(a)
        dt = dname(at)
        c = R.random()
        lo = R.choice([-1.5, -1, 0, 0.5, -0.25]) if c < 0.75 else None
        hi = R.choice([1.5, 1, 2, 0.75, 3]) if c > 0.25 or lo is None else None
        if not grad and R.random() < 0.05:
            lo, hi = R.choice([(None, None), (1.0, -1.0), (2, 2)])
        if dt in INTS and not grad and R.random() < 0.7:
            lo = int(lo) if lo is not None else None
            hi = int(hi) if hi is not None else None
        if dt in ("u8", "bool"):  # a negative bound converted to u8 is undefined in C (and wraps in PyTorch)
            lo = abs(lo) if lo is not None else None
            hi = abs(hi) if hi is not None else None
        if dt in INTS + ["bool"]:  # a whole bound: Lua's 1.0 is 1, which keeps an integer dtype (PyTorch's 1.0 promotes)
            lo = int(lo) if lo is not None and float(lo).is_integer() else lo
            hi = int(hi) if hi is not None and float(hi).is_integer() else hi
        if grad:
            if lo is not None and self.kink(at, lo):
                raise Reject()
            if hi is not None and self.kink(at, hi):
                raise Reject()
        inplace = R.random() < 0.2 and not (grad and self.vars[a].leaf)
        L = lambda v: "nil" if v is None else lnum(v)
        P = lambda v: "None" if v is None else pnum(v)
        out = a if inplace else self.new()
        meth = "clamp" if R.random() < 0.85 else "clip"
        upcast = dt == "f16"
        if inplace:
            lua = "%s:clamp_(%s, %s)" % (a, L(lo), L(hi))
            py = ("%s.copy_(torch.clamp(%s.float(), %s, %s))" % (a, a, P(lo), P(hi))) if upcast else \
                 ("%s.clamp_(%s, %s)" % (a, P(lo), P(hi)))
        else:
            lua = "%s = %s:%s(%s, %s)" % (out, a, meth, L(lo), L(hi))
            py = ("%s = torch.clamp(%s.float(), %s, %s).half()" % (out, a, P(lo), P(hi))) if upcast else \
                 ("%s = torch.clamp(%s, %s, %s)" % (out, a, P(lo), P(hi)))
        return self.S("clamp" + ("_" if inplace else ""), [out], [a], lua, py, "exact",
                      keep=[a] if inplace else [], alias=a if inplace else None,
                      grad_view_inplace=inplace and self.is_grad_view(a))

    def bool_operand(self, shape, to_target=False):
        R = self.R
        target = tuple(shape)
        if self.kind == "fwd" and R.random() < 0.4:
            def ok(t):
                if dname(t) != "bool":
                    return False
                try:
                    s = torch.broadcast_shapes(tuple(t.shape), target)
                except RuntimeError:
                    return False
                return (not to_target) or tuple(s) == target
            c = self.pick(ok)
            if c is not None:
                return c
        dt = "bool" if (self.kind == "grad" or R.random() < 0.95) else R.choice(["u8", "f32", "i64"])
        return self.add_input(dt, self.bshape(target, to_target))

    def g_where(self):
        R = self.R
        grad = self.kind == "grad"
        a = self.fpick()
        if a is None:
            raise Reject()
        at = self.val(a)
        dt = dname(at)
        kind = R.choice(["where", "where", "masked_fill", "masked_fill_"])
        if kind == "where":
            c = self.bool_operand(at.shape)
            if R.random() < 0.2 and not grad:
                a_l = a_p = None
                s = self.scalar(dt)
                a_l, a_p = lnum(s), pnum(s)
                ins = [c]
            else:
                a_l = a_p = a
                ins = [c, a]
            if R.random() < 0.35:
                s = self.scalar(dt)
                b_l, b_p = lnum(s), pnum(s)
            else:
                b = self.other_operand(a, dtypes=FLOATS if grad else None, same_dtype_p=0.8)
                b_l = b_p = b
                ins.append(b)
            out = self.new()
            if a_l == a and R.random() < 0.3:
                lua = "%s = %s:where(%s, %s)" % (out, a, c, b_l)
            else:
                lua = "%s = nnr.where(%s, %s, %s)" % (out, c, a_l, b_l)
            py = "%s = torch.where(%s, %s, %s)" % (out, c, a_p, b_p)
            scal = [x for x in (a_p, b_p) if x not in ins]
            bool_int = any(dname(self.val(v)) == "bool" for v in ins[1:]) and any(
                re.fullmatch(r"-?\d+", x) for x in scal)
            return self.S("where", [out], ins, lua, py, "exact", scale=0, bool_int_scalar=bool_int)
        m = self.bool_operand(at.shape, to_target=True)
        v = self.scalar(dt)
        if dt in INTS and isinstance(v, float):
            v = int(v)
        inplace = kind == "masked_fill_" and not (grad and self.vars[a].leaf)
        out = a if inplace else self.new()
        if inplace:
            lua, py = "%s:masked_fill_(%s, %s)" % (a, m, lnum(v)), "%s.masked_fill_(%s, %s)" % (a, m, pnum(v))
        else:
            lua = "%s = %s:masked_fill(%s, %s)" % (out, a, m, lnum(v))
            py = "%s = %s.masked_fill(%s, %s)" % (out, a, m, pnum(v))
        return self.S("masked_fill" + ("_" if inplace else ""), [out], [a, m], lua, py, "exact",
                      keep=[a] if inplace else [], alias=a if inplace else None,
                      grad_view_inplace=inplace and self.is_grad_view(a))

    def g_write(self):
        """fill_, zero_, copy_ and element/slice assignment (t[{...}] = v), often through views"""
        R = self.R
        a = self.pick()
        if a is None:
            raise Reject()
        at = self.val(a)
        dt = dname(at)
        kind = R.choice(["fill_", "zero_", "copy_", "copy_", "setitem", "setitem", "setitem"])
        if kind == "fill_":
            v = self.scalar(dt)
            if dt in INTS and isinstance(v, float):
                v = R.choice([int(v), v]) if v >= 0 or dt != "u8" else 0
            if dt == "u8" and isinstance(v, (int, float)) and v < 0:
                v = 0
            lua, py = "%s:fill_(%s)" % (a, lnum(v)), "%s.fill_(%s)" % (a, pnum(v))
            ins = [a]
        elif kind == "zero_":
            lua, py = "%s:zero_()" % a, "%s.zero_()" % a
            ins = [a]
        elif kind == "copy_":
            b = self.other_operand(a, to_target=R.random() < 0.92, same_dtype_p=0.5)
            self.cast_ok(self.val(b), dt)
            if self.overlapping(a, b):
                raise Reject()
            lua, py = "%s:copy_(%s)" % (a, b), "%s.copy_(%s)" % (a, b)
            ins = [a, b]
        else:
            if at.dim() == 0:
                raise Reject()
            key_l, key_p, vshape = self.index_key(at, allow_number_key=True)
            if R.random() < 0.5:
                v = self.scalar(dt)
                if dt in INTS and isinstance(v, float):
                    v = int(v)
                if dt == "u8" and v < 0:
                    v = 0
                vl, vp = lnum(v), pnum(v)
                ins = [a]
            else:
                src_dt = dt if R.random() < 0.7 else R.choice(DTYPES)
                b = self.add_input(src_dt, self.bshape(vshape, to_target=True))
                self.cast_ok(self.val(b), dt)
                vl = vp = b
                ins = [a, b]
            lua, py = "%s[%s] = %s" % (a, key_l, vl), "%s[%s] = %s" % (a, key_p, vp)
        return self.S("write." + kind, [a], ins, lua, py, "exact", keep=[a], alias=a,
                      grad_view_inplace=self.is_grad_view(a))

    def index_key(self, at, allow_number_key=False):
        """a Lua index key ({2, {1, 3}, {}} or a number) and PyTorch's (1, 0:3, :); returns the view's shape"""
        R = self.R
        nd = at.dim()
        shape = list(at.shape)
        if allow_number_key and nd >= 1 and shape[0] > 0 and R.random() < 0.2:
            i = R.randrange(shape[0])
            if R.random() < 0.3:
                i -= shape[0]
            return lnum(ld(i)), pnum(i), shape[1:]
        k = R.randint(1, nd)
        parts_l, parts_p, vshape = [], [], []
        for d in range(k):
            size = shape[d]
            c = R.random()
            if c < 0.35 and size > 0:
                i = R.randrange(size)
                if R.random() < 0.3:
                    i -= size
                parts_l.append(lnum(ld(i)))
                parts_p.append(pnum(i))
            elif c < 0.55:
                parts_l.append("{}")
                parts_p.append(":")
                vshape.append(size)
            else:
                a0 = R.randint(0, size)
                b0 = R.randint(a0, size)
                if b0 == 0:
                    b0 = min(size, 1)
                    a0 = min(a0, b0)
                s_l = a0 + 1 if R.random() < 0.7 else a0 - size
                e_l = b0 if R.random() < 0.7 else b0 - size - 1
                if s_l == 0 or e_l == 0:  # nnrun's ranges are 1-based: 0 is not an index
                    s_l, e_l = a0 + 1, b0
                if e_l == 0:
                    raise Reject()
                parts_l.append("{%d, %d}" % (s_l, e_l))
                parts_p.append("%d:%d" % (a0, b0))
                vshape.append(b0 - a0)
        vshape += shape[k:]
        return "{" + ", ".join(parts_l) + "}", ", ".join(parts_p) if len(parts_p) > 1 else parts_p[0] + ("," if False else ""), vshape

    def dims_pick(self, nd, multi=True):
        """None, one dim, or a tuple of distinct dims (negative ones too)"""
        R = self.R
        c = R.random()
        if nd == 0:
            if self.kind == "fwd" and R.random() < 0.08:
                return R.choice([0, -1])
            return None
        if c < 0.25:
            return None
        if c < 0.7 or not multi or nd == 1:
            d = R.randrange(nd)
            return d - nd if R.random() < 0.3 else d
        k = R.randint(1, nd)
        ds = R.sample(range(nd), k)
        return tuple(d - nd if R.random() < 0.3 else d for d in ds)

    @staticmethod
    def dims_l(d):
        if d is None:
            return "nil"
        if isinstance(d, tuple):
            return "{" + ", ".join(str(ld(x)) for x in d) + "}"
        return str(ld(d))

    @staticmethod
    def dims_p(d):
        if d is None:
            return "None"
        if isinstance(d, tuple):
            return "(" + ", ".join(str(x) for x in d) + ("," if len(d) == 1 else "") + ")"
        return str(d)

    def red_size(self, at, d):
        if d is None:
            return max(1, at.numel())
        ds = d if isinstance(d, tuple) else (d,)
        n = 1
        for x in ds:
            if at.dim():
                n *= at.shape[x]
        return max(1, n)

    def g_reduce(self):
        R = self.R
        grad = self.kind == "grad"
        name = R.choice(["sum", "sum", "mean", "mean", "prod", "var", "std", "max", "min", "max", "argmax", "argmin"]
                        if not grad else ["sum", "mean", "prod", "var", "std", "max", "min"])
        a = self.fpick()
        if a is None:
            raise Reject()
        at = self.val(a)
        dt = dname(at)
        nd = at.dim()
        d = self.dims_pick(nd, multi=name not in ("prod", "argmax", "argmin"))
        keep = R.random() < 0.4 if d is not None else False
        red = self.red_size(at, d)
        x = at.detach().to(torch.float64)
        if dt in INTS + ["bool"] and name in ("sum", "prod"):
            try:
                if name == "sum":
                    ref = x.sum() if d is None else x.sum(d)
                else:
                    ref = x.prod() if d is None else x.prod(d)
                self.int_ok(ref, "i64")
            except (RuntimeError, IndexError):
                pass
        if grad:
            if name in ("max", "min") and self.ties(at, None if d is None else d):
                raise Reject()
            if name in ("var", "std") and red <= 2:
                raise Reject()
            if name == "std":
                try:
                    v = torch.var(x, d)
                    if v.numel() and float(v.min()) < 1e-3:
                        raise Reject()
                except (RuntimeError, IndexError):
                    raise Reject()
            if name == "prod" and red > 8:
                raise Reject()
        outs = [self.new()]
        kd_l = ", true" if keep else (", false" if R.random() < 0.2 and d is not None else "")
        kd_p = ", keepdim=True" if keep else ""
        dl, dp = self.dims_l(d), self.dims_p(d)
        upcast = name == "prod" and dt in ("f16", "bf16")
        idx = []
        if name in ("sum", "mean", "prod"):
            if d is None:
                lua = "%s = %s:%s()" % (outs[0], a, name) if R.random() < 0.8 else "%s = nnr.%s(%s)" % (outs[0], name, a)
                py = "%s = torch.%s(%s)" % (outs[0], name, "%s.float()" % a if upcast else a)
            else:
                lua = "%s = %s:%s(%s%s)" % (outs[0], a, name, dl, kd_l)
                py = "%s = torch.%s(%s, %s%s)" % (outs[0], name, "%s.float()" % a if upcast else a, dp, kd_p)
            if upcast:
                py += ".to(%s)" % PDT[dt]
            cls = "reduce" if dt in FLOATS else "exact"
            if name == "prod":
                cls = "prod" if dt in FLOATS else "exact"
        elif name in ("var", "std"):
            corr = R.choice([None, None, 0, 1, 2])
            if corr is None:
                lua = "%s = %s:%s(%s%s)" % (outs[0], a, name, dl if (d is not None or keep) else "", kd_l) \
                    if d is not None else "%s = %s:%s()" % (outs[0], a, name)
                py = "%s = torch.%s(%s%s%s)" % (outs[0], name, a, (", " + dp) if d is not None else "", kd_p)
            else:
                lua = "%s = %s:%s(%s, %s, %d)" % (outs[0], a, name, dl, "true" if keep else "false", corr)
                py = "%s = torch.%s(%s, %s, correction=%d%s)" % (outs[0], name, a, dp, corr, kd_p)
            cls = "var"
        elif name in ("max", "min"):
            if d is None:
                lua = "%s = %s:%s()" % (outs[0], a, name)
                py = "%s = torch.%s(%s)" % (outs[0], name, a)
            elif isinstance(d, tuple):
                lua = "%s = %s:%s(%s%s)" % (outs[0], a, name, dl, kd_l)
                py = "%s = torch.a%s(%s, %s%s)" % (outs[0], name, a, dp, kd_p)
            else:
                outs.append(self.new())
                idx = [outs[1]]
                lua = "%s, %s = %s:%s(%s%s)" % (outs[0], outs[1], a, name, dl, kd_l)
                py = "%s, %s = torch.%s(%s, %s%s)" % (outs[0], outs[1], name, a, dp, kd_p)
            cls = "exact"
        else:  # argmax, argmin
            if d is None:
                lua = "%s = %s:%s()" % (outs[0], a, name)
                py = "%s = torch.%s(%s)" % (outs[0], name, a)
            else:
                lua = "%s = %s:%s(%s%s)" % (outs[0], a, name, dl, kd_l)
                py = "%s = torch.%s(%s, %s%s)" % (outs[0], name, a, dp, kd_p)
            idx = [outs[0]]
            cls = "disc"
        return self.S("reduce." + name + ("" if d is None else (".dims" if isinstance(d, tuple) else ".dim")),
                      outs, [a], lua, py, cls, idx=idx, red=red, scale=self.scale_of(a))

    def g_softmax(self):
        R = self.R
        a = self.pick(lambda t: dname(t) in FLOATS) if (self.kind == "grad" or R.random() < 0.9) else self.pick()
        if a is None:
            raise Reject()
        at = self.val(a)
        nd = at.dim()
        name = R.choice(["softmax", "log_softmax"])
        d = R.randrange(nd) if nd else 0
        if nd and R.random() < 0.3:
            d -= nd
        if nd == 0 and R.random() < 0.8:
            raise Reject()
        out = self.new()
        c = R.random()
        if c < 0.2 and (d == nd - 1 or d == -1):
            lua = "%s = %s:%s()" % (out, a, name)
        elif c < 0.4:
            lua = "%s = nnr.%s(%s, %d)" % (out, name, a, ld(d))
        else:
            lua = "%s = %s:%s(%d)" % (out, a, name, ld(d))
        if dname(at) not in FLOATS and at.numel() == 0:
            raise Reject()  # PyTorch gives an empty tensor of the input's dtype, without looking for a kernel
        if dname(at) in ("f16", "bf16"):
            # no f16 kernel in PyTorch 1.13's cpu; its bf16 one gives -inf for log_softmax([143, 0.0012], 0)
            py = "%s = torch.%s(%s.float(), %d).to(%s)" % (out, name, a, d, PDT[dname(at)])
        else:
            py = "%s = torch.%s(%s, %d)" % (out, name, a, d)
        return self.S(name, [out], [a], lua, py, "softmax", scale=self.scale_of(a),
                      red=at.shape[d] if nd else 1)

    def g_sortscan(self):
        """issue 16's native ops: sort/argsort (stable), topk values, cumsum/cumprod, rounding, the
        float tests and any/all, along a random dim"""
        R = self.R
        grad = self.kind == "grad"
        ok_dts = FLOATS[:2] + ["i32", "i64"]
        a = self.pick(lambda t: dname(t) in (FLOATS[:2] if grad else ok_dts) and t.dim() >= 1)
        if a is None:
            raise Reject()
        at = self.val(a)
        dt, nd = dname(at), at.dim()
        d = R.randrange(nd)
        if R.random() < 0.3:
            d -= nd
        n = at.shape[d]
        names = ["sort", "cumsum", "cumprod", "topk"] if grad else \
            ["sort", "argsort", "cumsum", "cumprod", "topk", "floor", "ceil", "trunc", "round", "isnan", "isfinite", "any", "all"]
        name = R.choice(names)
        is_float = dt in FLOATS
        if name in ("floor", "ceil", "trunc", "round", "isnan", "isfinite") and not is_float:
            raise Reject()
        if name == "cumprod" and not is_float:
            raise Reject()          # integer products overflow: undefined in both
        if name in ("cumsum", "cumprod") and dt == "i32":
            raise Reject()          # PyTorch gives i64 for i32 input as nnrun does, but the generator's int_ok checks i64 sums only
        out = self.new()
        if name == "sort":
            desc = R.random() < 0.5
            out2 = self.new()
            lua = "%s, %s = %s:sort(%d, %s)" % (out, out2, a, ld(d), "true" if desc else "false")
            py = "%s, %s = torch.sort(%s, stable=True, dim=%d, descending=%s); %s = %s + 1" % (out, out2, a, d, desc, out2, out2)
            return self.S("sort", [out, out2], [a], lua, py, "exact")
        if name == "argsort":
            desc = R.random() < 0.5
            lua = "%s = %s:argsort(%d, %s)" % (out, a, ld(d), "true" if desc else "false")
            py = "%s = torch.sort(%s, stable=True, dim=%d, descending=%s)[1] + 1" % (out, a, d, desc)
            return self.S("argsort", [out], [a], lua, py, "exact")
        if name == "topk":
            if n == 0:
                raise Reject()
            k = R.randint(1, n)
            largest = R.random() < 0.6
            if grad and n > 1:      # which of equal elements topk returns first is PyTorch's own choice (not stable)
                srt = torch.sort(at.detach().to(torch.float64), dim=d)[0]
                if bool(((srt.narrow(d, 1, n - 1) - srt.narrow(d, 0, n - 1)).abs() < 1e-12).any()):
                    raise Reject()
            lua = "%s = (%s:topk(%d, %d, %s))" % (out, a, k, ld(d), "true" if largest else "false")
            py = "%s = torch.topk(%s, %d, %d, largest=%s, sorted=True)[0]" % (out, a, k, d, largest)
            return self.S("topk", [out], [a], lua, py, "exact")
        if name in ("cumsum", "cumprod"):
            if dt in INTS:
                x = at.detach().to(torch.float64)
                self.int_ok(x.abs().cumsum(d) if n else x, "i64")
            lua = "%s = %s:%s(%d)" % (out, a, name, ld(d))
            py = "%s = torch.%s(%s, %d)" % (out, name, a, d)
            return self.S(name, [out], [a], lua, py, "reduce" if name == "cumsum" else "prod", scale=self.scale_of(a), red=max(n, 1))
        if name in ("any", "all"):
            lua = "%s = %s:%s(%d)" % (out, a, name, ld(d))
            py = "%s = torch.%s(%s, %d)" % (out, name, a, d)
            return self.S(name, [out], [a], lua, py, "exact")
        lua = "%s = %s:%s()" % (out, a, name)
        py = "%s = torch.%s(%s)" % (out, name, a)
        return self.S(name, [out], [a], lua, py, "exact")

    def g_matmul(self):
        R = self.R
        grad = self.kind == "grad"
        form = R.choice(["matmul", "matmul", "matmul", "mm", "bmm", "dot"])
        dt = R.choice(["f32", "f64", "f64", "bf16", "f16"] if not grad else ["f64", "f64", "f32"])
        if not grad and R.random() < 0.08:
            dt = R.choice(["i32", "i64"])
        M, K, N = R.choice([0, 1, 2, 3, 4]), R.choice([0, 1, 2, 3, 5, 7]), R.choice([1, 2, 3, 4])
        if R.random() < 0.85:
            M, K = max(M, 1), max(K, 1)
        batch = []
        if form == "matmul":
            ra, rb = R.choice([1, 2, 2, 3, 4]), R.choice([1, 2, 2, 3])
            batch = [R.choice([1, 2, 3]) for _ in range(max(ra, rb) - 2)] if max(ra, rb) > 2 else []
            sa = ([K] if ra == 1 else batch[len(batch) - (ra - 2):] + [M, K] if ra > 2 else [M, K]) if ra >= 1 else []
            sb = ([K] if rb == 1 else batch[len(batch) - (rb - 2):] + [K, N] if rb > 2 else [K, N])
            if ra > 2 and R.random() < 0.3:
                sa[0] = 1
        elif form == "mm":
            sa, sb = [M, K], [K, N]
        elif form == "bmm":
            B = R.choice([1, 2, 3])
            sa, sb = [B, M, K], [B, K, N]
        else:
            sa, sb = [K], [K]
        if not grad and R.random() < 0.05:
            sb = list(sb)
            sb[-2 if len(sb) > 1 else -1] += 1  # inner sizes differ: both must raise
        # operand a: an existing value of that shape, or a new one
        a = self.pick(lambda t: list(t.shape) == sa and dname(t) == dt) if R.random() < 0.5 else None
        if a is None:
            a = self.add_input(dt, sa, rg=grad and R.random() < 0.5)
        dtb = dt if R.random() < 0.93 else R.choice(["f32", "f64"])
        if 0 in sa or 0 in sb:
            dtb = dt  # PyTorch checks the dtypes only when there is something to multiply
        b = self.add_input(dtb, sb, rg=grad and R.random() < 0.5)
        if R.random() < 0.3 and len(sb) >= 2:
            # a transposed operand: the same values stored the other way round
            b2 = self.new()
            st = self.S("view.transpose_copy", [b2], [b], "%s = %s:transpose(-1, -2):contiguous():transpose(-1, -2)" % (b2, b),
                        "%s = %s.transpose(-1, -2).contiguous().transpose(-1, -2)" % (b2, b), "exact", alias=None)
            if not self.execute(st):
                raise RuntimeError("transpose copy raised")
            b = b2
        out = self.new()
        c = R.random()
        if form == "matmul":
            lua = ("%s = %s:matmul(%s)" if c < 0.6 else "%s = nnr.matmul(%s, %s)") % (out, a, b)
        else:
            lua = ("%s = %s:%s(%s)" % (out, a, form, b)) if c < 0.6 else ("%s = nnr.%s(%s, %s)" % (out, form, a, b))
        if dt in ("f16", "bf16") and dtb == dt:
            # PyTorch 1.13 has no f16 matmul on cpu, and its bf16 one accumulates small products in bf16:
            # the reference is the product in f32, rounded once
            py = "%s = torch.%s(%s.float(), %s.float()).to(%s)" % (out, form, a, b, PDT[dt])
        elif False:
            py = "%s = torch.%s(%s.float(), %s.float()).half()" % (out, form, a, b)
        else:
            py = "%s = torch.%s(%s, %s)" % (out, form, a, b)
        return self.S(form, [out], [a, b], lua, py, "matmul", red=max(1, K),
                      scale=self.scale_of(a) * self.scale_of(b))

    def g_cat(self):
        R = self.R
        grad = self.kind == "grad"
        a = self.fpick()
        if a is None:
            raise Reject()
        at = self.val(a)
        nd = at.dim()
        stack = R.random() < 0.35
        if stack:
            d = R.randint(0, nd)
            if R.random() < 0.3:
                d -= nd + 1
        else:
            if nd == 0:
                if R.random() < 0.8:
                    raise Reject()
                d = 0
            else:
                d = R.randrange(nd)
                if R.random() < 0.3:
                    d -= nd
        names = [a]
        for _ in range(R.choice([1, 1, 2])):
            s = list(at.shape)
            if not stack and nd:
                s[d] = R.choice([0, 1, 2, 3])
            if not grad and R.random() < 0.05 and nd:
                s[R.randrange(nd)] += 1  # mismatched: both raise
            dt = dname(at) if R.random() < 0.75 else R.choice(FLOATS if grad else DTYPES)
            names.append(self.add_input(dt, s, rg=grad and R.random() < 0.5))
        R.shuffle(names)
        out = self.new()
        fn = "stack" if stack else "cat"
        lua = "%s = nnr.%s({%s}, %d)" % (out, fn, ", ".join(names), ld(d))
        py = "%s = torch.%s([%s], %d)" % (out, fn, ", ".join(names), d)
        return self.S(fn, [out], names, lua, py, "exact")

    def g_view(self):
        R = self.R
        a = self.pick() if self.kind == "fwd" else self.fpick()
        if a is None:
            raise Reject()
        at = self.val(a)
        nd = at.dim()
        shape = list(at.shape)
        out = self.new()
        kinds = ["transpose", "permute", "narrow", "select", "index", "expand", "squeeze", "unsqueeze",
                 "flatten", "view", "reshape", "split", "chunk", "contiguous", "clone", "t", "nparts", "getnum"]
        kind = R.choice(kinds)
        layout = "view"
        outs = [out]
        ret_number = False
        if kind == "transpose":
            if nd == 0:
                raise Reject()
            i, j = R.randrange(nd), R.randrange(nd)
            i = i - nd if R.random() < 0.2 else i
            j = j - nd if R.random() < 0.2 else j
            lua = "%s = %s:transpose(%d, %d)" % (out, a, ld(i), ld(j))
            py = "%s = %s.transpose(%d, %d)" % (out, a, i, j)
        elif kind == "t":
            if nd > 2 and R.random() < 0.9:
                raise Reject()
            lua, py = "%s = %s:t()" % (out, a), "%s = %s.t()" % (out, a)
        elif kind == "permute":
            if nd == 0:
                raise Reject()
            p = list(range(nd))
            R.shuffle(p)
            p = [x - nd if R.random() < 0.15 else x for x in p]
            lua = "%s = %s:permute(%s)" % (out, a, ", ".join(str(ld(x)) for x in p))
            py = "%s = %s.permute(%s)" % (out, a, ", ".join(str(x) for x in p))
        elif kind == "narrow":
            if nd == 0:
                raise Reject()
            d = R.randrange(nd)
            size = shape[d]
            start = R.randint(0, size)
            length = R.randint(0, size - start)
            if R.random() < 0.2 and start < size:
                sl = sp = start - size  # negative starts count from the end in both
            else:
                sl, sp = start + 1, start
            dd = d - nd if R.random() < 0.2 else d
            lua = "%s = %s:narrow(%d, %d, %d)" % (out, a, ld(dd), sl, length)
            py = "%s = %s.narrow(%d, %d, %d)" % (out, a, dd, sp, length)
        elif kind == "select":
            if nd == 0:
                raise Reject()
            d = R.randrange(nd)
            if shape[d] == 0:
                raise Reject()
            i = R.randrange(shape[d])
            i = i - shape[d] if R.random() < 0.25 else i
            lua = "%s = %s:select(%d, %d)" % (out, a, ld(d), ld(i))
            py = "%s = %s.select(%d, %d)" % (out, a, d, i)
        elif kind in ("index", "getnum"):
            if nd == 0:
                raise Reject()
            if kind == "getnum":
                if at.numel() == 0:
                    raise Reject()
                # every dim indexed: a Lua number
                if nd == 1:
                    i = R.randrange(shape[0])
                    i = i - shape[0] if R.random() < 0.3 else i
                    lua = "%s = %s[%d]" % (out, a, ld(i))
                    py = "%s = %s[%d].item()" % (out, a, i)
                else:
                    ids = [R.randrange(s) for s in shape]
                    lua = "%s = %s[{%s}]" % (out, a, ", ".join(str(ld(i)) for i in ids))
                    py = "%s = %s[%s].item()" % (out, a, ", ".join(str(i) for i in ids))
                ret_number = True
                layout = None
            else:
                key_l, key_p, _ = self.index_key(at, allow_number_key=True)
                if key_l.lstrip("-").isdigit() and nd == 1:
                    raise Reject()  # a number, covered by getnum
                full_numbers = not key_l.startswith("{") or (key_l.count("{") == 1 and len(key_p.split(",")) == nd
                                                              and ":" not in key_p)
                if full_numbers and key_l.startswith("{") and nd == len(key_p.split(",")):
                    py = "%s = %s[%s].item()" % (out, a, key_p)
                    ret_number = True
                    layout = None
                else:
                    py = "%s = %s[%s]" % (out, a, key_p)
                lua = "%s = %s[%s]" % (out, a, key_l)
        elif kind == "expand":
            new = [R.choice([1, 2, 3]) for _ in range(R.choice([0, 0, 1, 2]))]
            tgt = []
            for s in shape:
                if s == 1:
                    tgt.append(R.choice([1, 2, 3, 4, 0, -1]))
                else:
                    tgt.append(R.choice([s, -1]))
            if self.kind == "fwd" and R.random() < 0.05 and tgt:
                tgt[R.randrange(len(tgt))] = 7  # not expandable: both raise
            tgt = new + tgt
            if not tgt:
                raise Reject()
            lua = "%s = %s:expand(%s)" % (out, a, ", ".join(map(str, tgt)))
            py = "%s = %s.expand(%s)" % (out, a, ", ".join(map(str, tgt)))
        elif kind == "squeeze":
            if nd and R.random() < 0.6:
                d = R.randrange(nd)
                d = d - nd if R.random() < 0.2 else d
                lua, py = "%s = %s:squeeze(%d)" % (out, a, ld(d)), "%s = %s.squeeze(%d)" % (out, a, d)
            else:
                lua, py = "%s = %s:squeeze()" % (out, a), "%s = %s.squeeze()" % (out, a)
        elif kind == "unsqueeze":
            if nd >= 6:
                raise Reject()
            d = R.randint(0, nd)
            d = d - nd - 1 if R.random() < 0.3 else d
            lua, py = "%s = %s:unsqueeze(%d)" % (out, a, ld(d)), "%s = %s.unsqueeze(%d)" % (out, a, d)
        elif kind == "flatten":
            if nd == 0 or R.random() < 0.4:
                lua, py = "%s = %s:flatten()" % (out, a), "%s = torch.flatten(%s)" % (out, a)
            else:
                s = R.randrange(nd)
                e = R.randrange(s, nd)
                lua = "%s = %s:flatten(%d, %d)" % (out, a, ld(s), ld(e))
                py = "%s = torch.flatten(%s, %d, %d)" % (out, a, s, e)
            layout = "view_if_shared"
        elif kind in ("view", "reshape"):
            n = at.numel()
            tgt = self.factor_shape(n)
            if tgt and R.random() < 0.4:
                tgt[R.randrange(len(tgt))] = -1
            if self.kind == "fwd" and R.random() < 0.04:
                tgt = tgt + [2]  # wrong element count: both raise
            lua = "%s = %s:%s(%s)" % (out, a, kind, ", ".join(map(str, tgt)))
            py = "%s = %s.%s(%s)" % (out, a, kind, ", ".join(map(str, tgt)) if tgt else "()")
            if not tgt:
                lua = "%s = %s:%s({})" % (out, a, kind)
            layout = "view" if kind == "view" else "view_if_shared"
        elif kind in ("split", "chunk", "nparts"):
            if nd == 0:
                raise Reject()
            d = R.randrange(nd)
            size = shape[d]
            fn = R.choice(["split", "chunk"])
            if fn == "split":
                if R.random() < 0.3 and size > 0:
                    cuts = sorted(R.randint(0, size) for _ in range(R.randint(0, 2)))
                    parts = [b - a0 for a0, b in zip([0] + cuts, cuts + [size])]
                    arg_l, arg_p = "{%s}" % ", ".join(map(str, parts)), "[%s]" % ", ".join(map(str, parts))
                    count = len(parts)
                else:
                    k = R.randint(1, 4)
                    arg_l = arg_p = str(k)
                    count = max(1, -(-size // k)) if size else 1
            else:
                k = R.randint(1, 4)
                arg_l = arg_p = str(k)
                count = len(torch.chunk(at.detach(), k, d))
            if kind == "nparts":
                lua = "%s = #%s:%s(%s, %d)" % (out, a, fn, arg_l, ld(d))
                py = "%s = len(torch.%s(%s, %s, %d))" % (out, fn, a, arg_p, d)
                ret_number = True
                layout = None
            else:
                real = len(getattr(torch, fn)(at.detach(), eval(arg_p), d)) if True else count
                if real == 0:
                    raise Reject()
                k = R.randrange(real)
                lua = "%s = %s:%s(%s, %d)[%d]" % (out, a, fn, arg_l, ld(d), k + 1)
                py = "%s = torch.%s(%s, %s, %d)[%d]" % (out, fn, a, arg_p, d, k)
        elif kind == "contiguous":
            lua, py = "%s = %s:contiguous()" % (out, a), "%s = %s.contiguous()" % (out, a)
            layout = "contig"
        else:  # clone
            lua, py = "%s = %s:clone()" % (out, a), "%s = %s.clone()" % (out, a)
            layout = None
        alias = a if layout in ("view", "view_if_shared") else None
        return self.S("view." + kind, outs, [a], lua, py, "exact", alias=alias, layout=layout, num_dt=dname(at),
                      idx=[out] if self.vars[a].index and not ret_number else [], index_src=self.vars[a].index)

    def g_meta(self):
        """sizes, strides and flags as Lua numbers: numel, dim, size(d), #t, stride(d), is_contiguous"""
        R = self.R
        a = self.pick()
        if a is None:
            raise Reject()
        at = self.val(a)
        nd = at.dim()
        out = self.new()
        kind = R.choice(["numel", "dim", "size", "len", "stride", "is_contiguous"])
        if kind in ("stride", "is_contiguous") and not self.vars[a].layout:
            raise Reject()  # layouts are compared only where PyTorch's is nnrun's by construction (views of inputs)
        if kind == "numel":
            lua, py = "%s = %s:numel()" % (out, a), "%s = %s.numel()" % (out, a)
        elif kind == "dim":
            lua, py = "%s = %s:dim()" % (out, a), "%s = %s.dim()" % (out, a)
        elif kind == "len":
            lua, py = "%s = #%s" % (out, a), "%s = len(%s)" % (out, a)
        elif kind == "is_contiguous":
            lua, py = "%s = %s:is_contiguous()" % (out, a), "%s = %s.is_contiguous()" % (out, a)
        else:
            if nd == 0:
                raise Reject()
            d = R.randrange(nd)
            d = d - nd if R.random() < 0.3 else d
            if kind == "stride" and at.shape[d] <= 1:
                raise Reject()  # the stride of a dim of size 1 is arbitrary
            lua, py = "%s = %s:%s(%d)" % (out, a, kind, ld(d)), "%s = %s.%s(%d)" % (out, a, kind, d)
        return self.S("meta." + kind, [out], [a], lua, py, "disc")

    def factor_shape(self, n):
        R = self.R
        if n == 0:
            return R.choice([[0], [0, 3], [2, 0], [0, 1, 2]])
        fs = []
        m = n
        p = 2
        while m > 1:
            while m % p == 0:
                fs.append(p)
                m //= p
            p += 1
        R.shuffle(fs)
        dims = []
        for f in fs:
            if dims and R.random() < 0.5:
                dims[R.randrange(len(dims))] *= f
            else:
                dims.append(f)
        for _ in range(R.choice([0, 0, 1])):
            dims.insert(R.randint(0, len(dims)), 1)
        return dims if dims else ([1] if R.random() < 0.5 else [])

    def g_cast(self):
        R = self.R
        a = self.fpick()
        if a is None:
            raise Reject()
        at = self.val(a)
        dt = R.choice(FLOATS if self.kind == "grad" else DTYPES)
        if self.kind == "grad" and dt in ("f16", "bf16") and R.random() < 0.8:
            dt = R.choice(["f32", "f64"])
        self.cast_ok(at, dt)
        out = self.new()
        c = R.random()
        if c < 0.5:
            lua = '%s = %s:to("%s")' % (out, a, dt)
        elif c < 0.8:
            lua = "%s = %s:%s()" % (out, a, PY_CAST[dt])
        else:
            lua = '%s = %s:to{dtype = "%s"}' % (out, a, dt)
        py = "%s = %s.to(%s)" % (out, a, PDT[dt])
        return self.S("cast", [out], [a], lua, py, "disc" if dt in INTS + ["bool"] else "exact",
                      layout=None)

    def index_tensor(self, shape, hi, dtype="i64"):
        """an index input (0-based in PyTorch, 1-based in nnrun) of values in [0, hi)"""
        R = self.R
        if self.kind == "fwd" and R.random() < 0.04 and numel(shape):
            return self.add_input(dtype, shape, index_hi=hi + 1, index_lo=hi)  # out of range: both raise
        if hi <= 0:
            if numel(shape):
                return self.add_input(dtype, shape, index_hi=1, index_lo=0)  # no valid index: both raise
            return self.add_input(dtype, shape, index_hi=1)
        return self.add_input(dtype, shape, index_hi=hi)

    def g_index(self):
        R = self.R
        grad = self.kind == "grad"
        a = self.fpick()
        if a is None:
            raise Reject()
        at = self.val(a)
        nd = at.dim()
        if nd == 0:
            raise Reject()
        shape = list(at.shape)
        d = R.randrange(nd)
        dd = d - nd if R.random() < 0.2 else d
        kind = R.choice(["gather", "gather", "index_select", "index_select", "scatter_add", "index_add"])
        idt = "i64" if (grad or R.random() < 0.93) else "i32"
        out = self.new()
        if kind == "gather":
            # an argmax/max index of a (keepdim) if one fits, else a new index
            cand = None
            if R.random() < 0.5:
                def fits(t):
                    return (t.dtype == torch.int64 and t.dim() == nd and
                            all(t.shape[k] <= shape[k] for k in range(nd) if k != d) and
                            (t.numel() == 0 or int(t.max()) < shape[d]))
                cand = self.pick(fits, index=True)
            if cand is None:
                ishape = [R.randint(0, s) if k != d else R.randint(0, 4) for k, s in enumerate(shape)]
                if R.random() < 0.5:
                    ishape = [s if k != d else R.randint(1, 4) for k, s in enumerate(shape)]
                cand = self.index_tensor(ishape, shape[d], idt)
            lua = ("%s = %s:gather(%d, %s)" if R.random() < 0.7 else "%s = nnr.gather(%s, %d, %s)") % (out, a, ld(dd), cand)
            py = "%s = torch.gather(%s, %d, %s)" % (out, a, dd, cand)
            return self.S("index.gather", [out], [a, cand], lua, py, "exact")
        if kind == "index_select":
            L = R.randint(0, 5)
            if R.random() < 0.3 and not grad:
                vals = [R.randrange(shape[d]) for _ in range(L)] if shape[d] else []
                if not vals:
                    vals = [0] if shape[d] else []
                if not vals:
                    raise Reject()
                lua = "%s = %s:index_select(%d, {%s})" % (out, a, ld(dd), ", ".join(str(v + 1) for v in vals))
                py = "%s = torch.index_select(%s, %d, torch.tensor([%s]))" % (out, a, dd, ", ".join(map(str, vals)))
                return self.S("index.index_select.table", [out], [a], lua, py, "exact")
            idx = self.index_tensor([L], shape[d], idt)
            lua = "%s = %s:index_select(%d, %s)" % (out, a, ld(dd), idx)
            py = "%s = torch.index_select(%s, %d, %s)" % (out, a, dd, idx)
            return self.S("index.index_select", [out], [a, idx], lua, py, "exact")
        if kind == "scatter_add":
            sshape = [R.randint(0, s) if k != d else R.randint(0, 4) for k, s in enumerate(shape)]
            if R.random() < 0.5:
                sshape = [s if k != d else R.randint(1, 4) for k, s in enumerate(shape)]
            src = self.add_input(dname(at) if R.random() < 0.95 else R.choice(FLOATS), sshape,
                                 rg=grad and R.random() < 0.5)
            ishape = list(sshape)
            if not grad and R.random() < 0.1:
                ishape = [max(0, s - 1) for s in ishape]  # smaller index than src: PyTorch allows it
            idx = self.index_tensor(ishape, shape[d], idt)
            if dname(at) in INTS and shape[d]:
                try:
                    ref = torch.scatter_add(at.detach().to(torch.float64), d,
                                            self.val(idx).long().clamp(0, shape[d] - 1),
                                            self.val(src).detach().to(torch.float64))
                except (RuntimeError, IndexError):
                    ref = None  # raises for real too
                if ref is not None:
                    self.int_ok(ref, dname(at))
            lua = "%s = %s:scatter_add(%d, %s, %s)" % (out, a, ld(dd), idx, src)
            py = "%s = torch.scatter_add(%s, %d, %s, %s)" % (out, a, dd, idx, src)
            return self.S("index.scatter_add", [out], [a, idx, src], lua, py,
                          "reduce" if dname(at) in FLOATS else "exact", red=8, scale=self.scale_of(a, src))
        # index_add
        L = R.randint(0, 4)
        sshape = list(shape)
        sshape[d] = L
        src = self.add_input(dname(at) if R.random() < 0.95 else R.choice(FLOATS), sshape,
                             rg=grad and R.random() < 0.5)
        idx = self.index_tensor([L], shape[d], idt)
        if dname(at) in INTS and shape[d]:
            try:
                ref = torch.index_add(at.detach().to(torch.float64), d, self.val(idx).long().clamp(0, shape[d] - 1),
                                      self.val(src).detach().to(torch.float64))
            except (RuntimeError, IndexError):
                ref = None
            if ref is not None:
                self.int_ok(ref, dname(at))
        lua = "%s = %s:index_add(%d, %s, %s)" % (out, a, ld(dd), idx, src)
        py = "%s = torch.index_add(%s, %d, %s, %s)" % (out, a, dd, idx, src)
        return self.S("index.index_add", [out], [a, idx, src], lua, py,
                      "reduce" if dname(at) in FLOATS else "exact", red=8, scale=self.scale_of(a, src))

    def g_create(self):
        R = self.R
        out = self.new()
        kind = R.choice(["arange", "arange", "linspace", "eye", "full", "zeros", "ones", "like", "item"])
        dt = R.choice(DTYPES)
        if kind == "arange":
            dt = R.choice(["f32", "f64", "i64", "i32", "f32"])
            if R.random() < 0.6 or dt in ("i64", "i32"):
                a0, b0, s0 = R.randint(-5, 5), R.randint(-5, 12), R.choice([1, 1, 2, 3, -1, -2])
            else:
                a0, b0, s0 = R.choice([0, 0.5, -1.25]), R.choice([2, 3.5, 4.25, -2.0]), R.choice([0.5, 0.25, 0.75, -0.5, 0.3])
            if (b0 - a0) / s0 > 40:
                raise Reject()
            if R.random() < 0.3 and s0 == 1 and a0 == 0 and b0 >= 0:
                lua = '%s = nnr.arange(%s, {dtype = "%s"})' % (out, lnum(b0), dt)
                py = "%s = torch.arange(%s, dtype=%s)" % (out, pnum(b0), PDT[dt])
            else:
                lua = '%s = nnr.arange(%s, %s, %s, {dtype = "%s"})' % (out, lnum(a0), lnum(b0), lnum(s0), dt)
                py = "%s = torch.arange(%s, %s, %s, dtype=%s)" % (out, pnum(a0), pnum(b0), pnum(s0), PDT[dt])
            return self.S("create.arange", [out], [], lua, py, "round", scale=max(abs(a0), abs(b0)))
        if kind == "linspace":
            dt = R.choice(FLOATS)
            a0, b0, n = R.choice([0, -1, 0.5, 2]), R.choice([1, 3, -2.5, 10]), R.choice([0, 1, 2, 3, 5, 7])
            lua = '%s = nnr.linspace(%s, %s, %d, {dtype = "%s"})' % (out, lnum(a0), lnum(b0), n, dt)
            py = "%s = torch.linspace(%s, %s, %d, dtype=%s)" % (out, pnum(a0), pnum(b0), n, PDT[dt])
            return self.S("create.linspace", [out], [], lua, py, "round", scale=max(abs(a0), abs(b0)))
        if kind == "eye":
            n, m = R.randint(0, 4), R.choice([None, 0, 1, 2, 3, 5])
            if m is None:
                lua = '%s = nnr.eye(%d, {dtype = "%s"})' % (out, n, dt)
                py = "%s = torch.eye(%d, dtype=%s)" % (out, n, PDT[dt])
            else:
                lua = '%s = nnr.eye(%d, %d, {dtype = "%s"})' % (out, n, m, dt)
                py = "%s = torch.eye(%d, %d, dtype=%s)" % (out, n, m, PDT[dt])
            return self.S("create.eye", [out], [], lua, py, "exact")
        if kind in ("full", "zeros", "ones"):
            shape = self.rand_shape()
            if kind == "full":
                v = self.scalar(dt)
                if dt == "u8" and v < 0:
                    v = 1
                lua = '%s = nnr.full(%s, %s, {dtype = "%s"})' % (out, lshape(shape), lnum(v), dt)
                py = "%s = torch.full(%s, %s, dtype=%s)" % (out, pshape(shape), pnum(v), PDT[dt])
            else:
                lua = '%s = nnr.%s(%s, {dtype = "%s"})' % (out, kind, lshape(shape), dt)
                py = "%s = torch.%s(%s, dtype=%s)" % (out, kind, pshape(shape), PDT[dt])
            return self.S("create." + kind, [out], [], lua, py, "exact", layout="contig")
        a = self.pick()
        if a is None:
            raise Reject()
        at = self.val(a)
        if kind == "item":
            if at.numel() != 1:
                raise Reject()
            lua, py = "%s = %s:item()" % (out, a), "%s = %s.item()" % (out, a)
            return self.S("item", [out], [a], lua, py, "exact")
        fn = R.choice(["zeros_like", "ones_like", "full_like"])
        if fn == "full_like":
            v = self.scalar(dname(at))
            if dname(at) == "u8" and v < 0:
                v = 1
            lua, py = "%s = nnr.full_like(%s, %s)" % (out, a, lnum(v)), "%s = torch.full_like(%s, %s)" % (out, a, pnum(v))
        else:
            lua, py = "%s = nnr.%s(%s)" % (out, fn, a), "%s = torch.%s(%s)" % (out, fn, a)
        return self.S("create." + fn, [out], [a], lua, py, "exact")

    def g_func(self):
        """nn.functional: activations, losses, linear, layer_norm, embedding, conv2d, pools, batch_norm"""
        self.no_special = True
        try:
            return self.g_func_()
        finally:
            self.no_special = False

    no_special = False

    def g_func_(self):
        R = self.R
        grad = self.kind == "grad"
        kind = R.choice(["linear", "gelu", "elu", "leaky_relu", "layer_norm", "mse", "l1", "bce", "cross_entropy",
                         "nll", "embedding", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
                         "batch_norm"])
        dt = R.choice(["f32", "f64", "f64"] if grad else ["f32", "f64", "f32", "bf16", "f16"])
        rg = grad
        out = self.new()
        Fl = "nnr.nn.functional."
        up = dt in ("f16", "bf16")

        def P(name):  # a PyTorch operand in f32: PyTorch 1.13 lacks f16 kernels, and some of its bf16 ones
            return name + ".float()" if up else name  # round more than once (bf16 matmul, layer_norm)

        tail = (".to(%s)" % PDT[dt]) if up else ""
        if kind in ("gelu", "elu", "leaky_relu"):
            x = self.pick(lambda t: dname(t) == dt) if R.random() < 0.6 else None
            x = x or self.add_input(dt, self.rand_shape(), rg=rg)
            xt = self.val(x)
            if grad and kind != "gelu" and self.kink(xt):
                raise Reject()
            if kind == "gelu":
                lua, py = "%s = %sgelu(%s)" % (out, Fl, x), "%s = F.gelu(%s)%s" % (out, P(x), tail)
            else:
                p = R.choice([None, 0.2, 1.5, 0.01]) if kind == "elu" else R.choice([None, 0.2, 0.01, 0.3])
                if p is None:
                    lua, py = "%s = %s%s(%s)" % (out, Fl, kind, x), "%s = F.%s(%s)%s" % (out, kind, P(x), tail)
                else:
                    lua = "%s = %s%s(%s, %s)" % (out, Fl, kind, x, lnum(p))
                    py = "%s = F.%s(%s, %s)%s" % (out, kind, P(x), pnum(p), tail)
            return self.S("F." + kind, [out], [x], lua, py, "trans", scale=self.scale_of(x))
        if kind == "linear":
            ins_ = R.randint(0, 5) if R.random() < 0.1 else R.randint(1, 5)
            outf = R.randint(1, 4)
            lead = self.rand_shape(nd=R.choice([1, 1, 2, 0]), maxn=12)
            x = self.add_input(dt, lead + [ins_], rg=rg and R.random() < 0.6)
            w = self.add_input(dt, [outf, ins_], rg=rg)
            b = self.add_input(dt, [outf], rg=rg) if R.random() < 0.7 else None
            lua = "%s = %slinear(%s, %s%s)" % (out, Fl, x, w, (", " + b) if b else "")
            py = "%s = F.linear(%s, %s%s)%s" % (out, P(x), P(w), (", " + P(b)) if b else "", tail)
            return self.S("F.linear", [out], [x, w] + ([b] if b else []), lua, py, "matmul", red=max(1, ins_) + 1,
                          scale=self.scale_of(x) * self.scale_of(w) + self.scale_of(b))
        if kind == "layer_norm":
            shape = self.rand_shape(nd=R.choice([1, 2, 3]), allow0=False)
            x = self.add_input(dt, shape, rg=rg and R.random() < 0.7)
            k = R.randint(1, len(shape))
            ns = shape[len(shape) - k:]
            if grad and numel(ns) < 3:
                raise Reject()
            affine = R.random() < 0.6
            eps = R.choice([None, 1e-5, 0.1])
            args_l, args_p = [x, str(k)], [P(x), pshape(ns)]
            ins = [x]
            if affine:
                w = self.add_input(dt, ns, rg=rg)
                b = self.add_input(dt, ns, rg=rg)
                args_l += [w, b]
                args_p += [P(w), P(b)]
                ins += [w, b]
            elif eps is not None:
                args_l += ["nil", "nil"]
                args_p += ["None", "None"]
            if eps is not None:
                args_l.append(lnum(eps))
                args_p.append(pnum(eps))
            # nnrun's functional layer_norm takes the NUMBER of normalized (last) dims, PyTorch the shape
            lua = "%s = %slayer_norm(%s)" % (out, Fl, ", ".join(args_l))
            py = "%s = F.layer_norm(%s)%s" % (out, ", ".join(args_p), tail)
            # rounding in x - mean is amplified by up to 1/sqrt(eps) where the variance is small
            return self.S("F.layer_norm", [out], ins, lua, py, "norm", red=numel(ns),
                          scale=self.scale_of(x) / math.sqrt(eps or 1e-5) * max(1.0, self.scale_of(*ins[1:])))
        if kind in ("mse", "l1", "bce"):
            shape = self.rand_shape()
            x = self.add_input(dt, shape, rg=rg)
            y = self.add_input(dt, shape, rg=rg and kind != "bce" and R.random() < 0.5,
                               **({"lo": None} if kind != "bce" else {}))
            if kind == "l1" and grad and self.kink(self.val(x) - self.val(y)):
                raise Reject()
            red = R.choice([None, "mean", "sum", "none"])
            fl = {"mse": "mse_loss", "l1": "l1_loss", "bce": "binary_cross_entropy_with_logits"}[kind]
            lua = "%s = %s%s(%s, %s%s)" % (out, Fl, fl, x, y, (', {reduction = "%s"}' % red) if red else "")
            py = "%s = F.%s(%s, %s%s)%s" % (out, fl, P(x), P(y), (', reduction="%s"' % red) if red else "", tail)
            return self.S("F." + fl, [out], [x, y], lua, py, "reduce", red=max(1, numel(shape)) * 2,
                          scale=self.scale_of(x, y) ** 2 + 1)
        if kind in ("cross_entropy", "nll"):
            N, Cn = R.randint(1, 4), R.randint(1, 5)
            extra = [R.randint(1, 3)] if R.random() < 0.2 else []
            x = self.add_input(dt, [N, Cn] + extra, rg=rg)
            t = self.index_tensor([N] + extra, Cn, "i64")
            red = R.choice([None, "mean", "sum", "none"])
            opts_l, opts_p = [], []
            if red:
                opts_l.append('reduction = "%s"' % red)
                opts_p.append('reduction="%s"' % red)
            fl = "cross_entropy" if kind == "cross_entropy" else "nll_loss"
            if kind == "cross_entropy" and R.random() < 0.4:
                ls = R.choice([0.1, 0.25, 0.0])
                opts_l.append("label_smoothing = %s" % lnum(ls))
                opts_p.append("label_smoothing=%s" % pnum(ls))
            lua = "%s = %s%s(%s, %s%s)" % (out, Fl, fl, x, t, (", {" + ", ".join(opts_l) + "}") if opts_l else "")
            py = "%s = F.%s(%s, %s%s)%s" % (out, fl, P(x), t, (", " + ", ".join(opts_p)) if opts_p else "", tail)
            return self.S("F." + fl, [out], [x, t], lua, py, "softmax", red=Cn * N, scale=self.scale_of(x) + 1)
        if kind == "embedding":
            num, dim = R.randint(1, 6), R.randint(1, 4)
            w = self.add_input(dt, [num, dim], rg=rg)
            idx = self.index_tensor(self.rand_shape(nd=R.choice([0, 1, 2]), maxn=12), num, "i64")
            lua = "%s = %sembedding(%s, %s)" % (out, Fl, idx, w)
            py = "%s = F.embedding(%s, %s)" % (out, idx, w)
            return self.S("F.embedding", [out], [idx, w], lua, py, "exact")
        if kind == "conv2d":
            N, Cin, H, W = R.randint(1, 2), R.randint(1, 3), R.randint(1, 6), R.randint(1, 6)
            g = R.choice([1, 1, 1, Cin]) if Cin > 1 else 1
            Cout = g * R.randint(1, 2)
            kh, kw = R.randint(1, 3), R.randint(1, 3)
            stride = R.choice([1, 1, 2, (1, 2)])
            pad = R.choice([0, 0, 1, (1, 0)])
            dil = R.choice([1, 1, 2])
            x = self.add_input(dt, [N, Cin, H, W], rg=rg and R.random() < 0.6)
            w = self.add_input(dt, [Cout, Cin // g, kh, kw], rg=rg)
            b = self.add_input(dt, [Cout], rg=rg) if R.random() < 0.6 else None
            T_l = lambda v: ("{%d, %d}" % v) if isinstance(v, tuple) else str(v)
            T_p = lambda v: ("(%d, %d)" % v) if isinstance(v, tuple) else str(v)
            lua = "%s = %sconv2d(%s, %s, %s, {stride = %s, padding = %s, dilation = %s, groups = %d})" % (
                out, Fl, x, w, b or "nil", T_l(stride), T_l(pad), T_l(dil), g)
            py = "%s = F.conv2d(%s, %s, %s, %s, %s, %s, %d)%s" % (out, P(x), P(w), P(b) if b else "None",
                                                                T_p(stride), T_p(pad), T_p(dil), g, tail)
            return self.S("F.conv2d", [out], [x, w] + ([b] if b else []), lua, py, "matmul",
                          red=(Cin // g) * kh * kw + 1, scale=self.scale_of(x) * self.scale_of(w) + self.scale_of(b))
        if kind in ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"):
            nd = 3 if R.random() < 0.1 else 4
            shape = [R.randint(1, 2) for _ in range(nd - 2)] + [R.randint(1, 6), R.randint(1, 6)]
            x = self.add_input(dt, shape, rg=rg)
            if kind == "adaptive_avg_pool2d":
                osz = R.choice([1, 2, 3, (2, 1)])
                lua = "%s = %sadaptive_avg_pool2d(%s, %s)" % (out, Fl, x, ("{%d, %d}" % osz) if isinstance(osz, tuple) else osz)
                py = "%s = F.adaptive_avg_pool2d(%s, %s)%s" % (out, P(x), str(osz), tail)
                return self.S("F." + kind, [out], [x], lua, py, "reduce", red=36, scale=self.scale_of(x))
            k = R.choice([1, 2, 2, 3, (2, 1)])
            kmin = min(k) if isinstance(k, tuple) else k
            stride = R.choice([None, None, 1, 2])
            pad = R.choice([0, 0, 0, 1]) if kmin >= 2 else 0
            ceil = R.random() < 0.3
            opts_l, opts_p = [], []
            if stride is not None:
                opts_l.append("stride = %d" % stride)
                opts_p.append("stride=%d" % stride)
            if pad:
                opts_l.append("padding = %d" % pad)
                opts_p.append("padding=%d" % pad)
            if ceil:
                opts_l.append("ceil_mode = true")
                opts_p.append("ceil_mode=True")
            if kind == "max_pool2d" and R.random() < 0.2:
                opts_l.append("dilation = 2")
                opts_p.append("dilation=2")
            if kind == "avg_pool2d" and R.random() < 0.3:
                opts_l.append("count_include_pad = false")
                opts_p.append("count_include_pad=False")
            kl = ("{%d, %d}" % k) if isinstance(k, tuple) else str(k)
            lua = "%s = %s%s(%s, %s%s)" % (out, Fl, kind, x, kl, (", {" + ", ".join(opts_l) + "}") if opts_l else "")
            py = "%s = F.%s(%s, %s%s)%s" % (out, kind, P(x), str(k), (", " + ", ".join(opts_p)) if opts_p else "", tail)
            if grad and kind == "max_pool2d" and self.ties(self.val(x), None):
                raise Reject()
            return self.S("F." + kind, [out], [x], lua, py, "exact" if kind == "max_pool2d" else "reduce", red=9,
                          scale=self.scale_of(x))
        # batch_norm
        N, Cn = R.randint(1, 4), R.randint(1, 3)
        extra = [R.randint(1, 3) for _ in range(R.choice([0, 1, 2]))]
        x = self.add_input(dt, [N, Cn] + extra, rg=rg)
        training = R.random() < 0.6
        if training and numel([N] + extra) < 2:
            raise Reject()
        rm = self.add_input(dt, [Cn]) if (not training or R.random() < 0.7) else None
        rv = self.add_input(dt, [Cn], positive=True) if rm else None
        w = self.add_input(dt, [Cn], rg=rg) if R.random() < 0.6 else None
        b = self.add_input(dt, [Cn], rg=rg) if w else None
        mom = R.choice([None, 0.1, 0.5])
        args_l = [x, rm or "nil", rv or "nil", w or "nil", b or "nil", "true" if training else "false"]
        args_p = [P(x), P(rm) if rm else "None", P(rv) if rv else "None", P(w) if w else "None",
                  P(b) if b else "None", "True" if training else "False"]
        if mom is not None:
            args_l.append(lnum(mom))
            args_p.append(pnum(mom))
        if up:
            raise Reject()  # running stats are updated in place: no f32 detour for PyTorch's missing f16 kernel
        lua = "%s = %sbatch_norm(%s)" % (out, Fl, ", ".join(args_l))
        py = "%s = F.batch_norm(%s)" % (out, ", ".join(args_p))
        return self.S("F.batch_norm", [out] + ([rm, rv] if rm and training else []), [v for v in (x, rm, rv, w, b) if v],
                      lua, py, "norm", red=numel([N] + extra), keep=[rm, rv] if rm else [],
                      scale=self.scale_of(x, rm) / math.sqrt(1e-5) * max(1.0, self.scale_of(w)))

    # -----------------------------------------------------------------------------------------
    # programs
    # -----------------------------------------------------------------------------------------
    def trial_ok(self, st):
        """gradient programs: the candidate's values must be finite and moderate (run on detached copies)"""
        ns2 = {}
        for k, v in self.ns.items():
            ns2[k] = v.detach().clone() if torch.is_tensor(v) else v
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exec(st["py"], ns2)
        except Exception:
            return True  # raises for real too: an error step
        for o in st["outs"]:
            v = ns2.get(o)
            if torch.is_tensor(v) and v.is_floating_point() and v.numel():
                x = v.to(torch.float64)
                if not bool(torch.isfinite(x).all()) or float(x.abs().max()) > 1e5:
                    return False
        return True

    FWD = [("g_unary", 12), ("g_binary", 22), ("g_clamp", 3), ("g_where", 5), ("g_write", 7), ("g_reduce", 13),
           ("g_softmax", 3), ("g_matmul", 5), ("g_cat", 4), ("g_view", 20), ("g_cast", 5), ("g_index", 7),
           ("g_create", 3), ("g_func", 7), ("g_meta", 2), ("g_sortscan", 5)]
    GRAD = [("g_unary", 12), ("g_binary", 18), ("g_clamp", 2), ("g_where", 3), ("g_reduce", 9), ("g_softmax", 3),
            ("g_matmul", 5), ("g_cat", 3), ("g_view", 14), ("g_cast", 2), ("g_index", 5), ("g_func", 7), ("g_sortscan", 4)]

    def generate(self):
        R = self.R
        grad = self.kind == "grad"
        fams = self.GRAD if grad else self.FWD
        names, weights = [f for f, _ in fams], [w for _, w in fams]
        if grad:
            leaf_dt = "f64" if R.random() < 0.7 else "f32"
            for _ in range(R.randint(1, 3)):
                self.add_input(leaf_dt, self.rand_shape(allow0=R.random() < 0.1), rg=True)
        else:
            for i in range(R.randint(1, 3)):
                dt = R.choices(DTYPES, weights=[5, 3, 2, 2, 1.5, 1.5, 2, 2, 1.5])[0]
                if i == 0 and R.random() < 0.025:
                    # a large tensor now and then: the vectorized and multi-threaded paths of the kernels
                    self.add_input(dt, R.choice([[70001], [130, 513], [2, 65, 257], [4099], [33, 17, 9]]))
                else:
                    self.add_input(dt, self.rand_shape())
        want = R.randint(2, 14)
        made = tries = 0
        while made < want and tries < 80 and self.error is None:
            tries += 1
            fam = R.choices(names, weights=weights)[0]
            try:
                st = getattr(self, fam)()
            except Reject:
                continue
            if self.error is not None:
                break
            if grad and not self.trial_ok(st):
                continue
            made += 1
            if not self.execute(st):
                break
        if grad and self.error is None:
            self.add_loss()
        self.finish()

    def add_loss(self):
        R = self.R
        cand = [n for n, v in self.vars.items() if torch.is_tensor(self.ns.get(n)) and self.ns[n].requires_grad
                and dname(self.ns[n]) in ("f32", "f64") and not v.index]
        if not cand:
            return
        chosen = [cand[-1]] + R.sample(cand[:-1], min(len(cand) - 1, R.randint(0, 2)))
        terms_l, terms_p, ins = [], [], []
        for c in chosen:
            t = self.val(c)
            w = self.add_input(dname(t), list(t.shape))
            terms_l.append("(%s * %s):sum()" % (c, w))
            terms_p.append("(%s * %s).sum()" % (c, w))
            ins += [c, w]
        st = self.S("loss.backward", ["loss"], ins, "loss = %s\nloss:backward()" % " + ".join(terms_l),
                    "loss = %s\nloss.backward()" % " + ".join(terms_p), "reduce",
                    red=sum(max(1, self.val(c).numel()) for c in chosen), scale=self.scale_of(*ins) ** 2 + 1,
                    tol_dt="f32" if any(dname(self.val(c)) == "f32" for c in chosen) else None)
        self.execute(st)

    def replay(self, steps):
        for st in steps:
            st = Step(st)
            st["replay"] = True
            if not self.execute(st):
                break
        self.finish()

    def program(self):
        return {"seed": self.seed, "kind": self.kind, "steps": [dict((k, v) for k, v in s.items() if k != "replay")
                                                                for s in self.steps],
                "final": self.final_names() if self.error is None else [],
                "grads": self.grad_names(),
                "groups": {n: v.group for n, v in self.vars.items()},
                "index": [n for n, v in self.vars.items() if v.index],
                "layout": [n for n, v in self.vars.items() if v.layout]}


def make_program(seed, kind=None, steps=None):
    """generates (or replays the given steps of) one program; returns (program JSON, PyTorch's records)"""
    g = Gen(seed, kind)
    torch.manual_seed(seed)
    if steps is None:
        g.generate()
    else:
        g.replay(steps)
    err = g.trec["error"]
    if g.kind == "grad" and err and "modified by an inplace operation" in err[1] and err[0] == len(g.steps):
        # the gradient of the program as run, every saved tensor kept as it was when saved
        g2 = Gen(seed, g.kind)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t):
            g2.replay(g.steps)
        if g2.error is None:
            g.trec["alt_grads"] = g2.trec["grads"]
    return g.program(), g.trec


# -----------------------------------------------------------------------------------------------
# nnrun's side
# -----------------------------------------------------------------------------------------------


def lua_str(s):
    level = 0
    while ("]" + "=" * level + "]") in s + "]":
        level += 1
    eq = "=" * level
    return "[" + eq + "[" + s + "]" + eq + "]"


def lua_batch(progs):
    out = ["local P = {}"]
    for p in progs:
        steps = ", ".join("{code = %s, outs = {%s}}" % (lua_str(s["lua"]), ", ".join('"%s"' % o for o in s["outs"]))
                          for s in p["steps"])
        out.append("P[#P + 1] = (function() return {id = %d, steps = {%s}, final = {%s}, grads = {%s}} end)()" % (
            p["seed"], steps, ", ".join('"%s"' % n for n in p["final"]), ", ".join('"%s"' % n for n in p["grads"])))
    out.append("return P")
    return "\n".join(out) + "\n"


def unescape(s):
    return s.replace("\\n", "\n").replace("\\t", "\t").replace("\\\\", "\\")


def parse_results(path):
    progs = {}
    cur = None
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError:
        return progs
    with f:
        for line in f:
            if not line.endswith("\n"):
                break  # cut by a crash
            fl = line[:-1].split("\t")
            tag = fl[0]
            try:
                if tag == "P":
                    cur = {"steps": {}, "error": None, "final": {}, "grads": {}, "done": False}
                    progs[int(fl[1])] = cur
                elif tag == "R":
                    cur["steps"].setdefault(int(fl[1]), {})[fl[2]] = parse_value(fl[3:])
                elif tag == "E":
                    cur["error"] = (int(fl[1]), unescape("\t".join(fl[2:])))
                elif tag == "F":
                    cur["final"][fl[2]] = parse_value(fl[3:])
                elif tag == "G":
                    cur["grads"][fl[2]] = parse_value(fl[3:])
                elif tag == "D":
                    cur["done"] = True
            except (ValueError, IndexError):
                pass
    return progs


class Runner:
    def __init__(self, nnrun, threads=1, timeout=None, keep=False):
        self.nnrun = nnrun
        self.env = dict(os.environ)
        self.env["NNR_NUM_THREADS"] = str(threads)
        self.timeout = timeout
        self.tmp = tempfile.mkdtemp(prefix="difffuzz.")
        self.keep = keep
        self.n = 0

    def start(self, progs):
        """starts nnrun on a batch; returns a handle for wait()"""
        self.n += 1
        bpath = os.path.join(self.tmp, "batch%d.lua" % self.n)
        rpath = os.path.join(self.tmp, "results%d.txt" % self.n)
        with open(bpath, "w") as f:
            f.write(lua_batch(progs))
        errf = open(os.path.join(self.tmp, "stderr%d.txt" % self.n), "w+")
        p = subprocess.Popen([self.nnrun, os.path.join(HERE, "run_programs.lua"), bpath, rpath], stdout=errf,
                             stderr=subprocess.STDOUT, env=self.env)
        return (p, bpath, rpath, errf, progs, time.time())

    def wait(self, h):
        """-> (results by id, crash info or None)"""
        p, bpath, rpath, errf, progs, t0 = h
        limit = self.timeout or (30 + 2.0 * len(progs))
        hung = False
        try:
            rc = p.wait(timeout=max(1, limit - (time.time() - t0)))
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
            hung = True
        errf.seek(0)
        err = errf.read()
        errf.close()
        res = parse_results(rpath)
        if not self.keep:
            for path in (bpath, rpath, errf.name):
                try:
                    os.unlink(path)
                except OSError:
                    pass
        crash = None
        if rc != 0 or hung or any(not r["done"] for r in res.values()) or len(res) < len(progs):
            running = [i for i, r in res.items() if not r["done"]]
            crash = {"rc": rc, "hung": hung, "stderr": err[-3000:], "id": running[-1] if running else None}
        return res, crash

    def run(self, progs):
        return self.wait(self.start(progs))

    def run_all(self, progs, findings):
        """runs a batch; on a crash, confirms the program alone, records the finding and goes on after it"""
        results = {}
        todo = list(progs)
        while todo:
            res, crash = self.run(todo)
            results.update({i: r for i, r in res.items() if r["done"]})
            if crash is None:
                break
            cid = crash["id"]
            if cid is None:  # nnrun died before any program (or between two): a harness problem
                raise HarnessError("nnrun failed (exit %s) before running a program:\n%s" % (crash["rc"], crash["stderr"]))
            prog = next(p for p in todo if p["seed"] == cid)
            res1, crash1 = self.run([prog])
            findings.crash(prog, crash, alone=crash1 is not None)
            results[cid] = {"crash": crash}
            todo = todo[todo.index(prog) + 1:]
        return results


def signame(rc):
    if rc is not None and rc < 0:
        try:
            import signal
            return signal.Signals(-rc).name
        except Exception:
            return "signal %d" % -rc
    return "exit %s" % rc


# -----------------------------------------------------------------------------------------------
# comparison
# -----------------------------------------------------------------------------------------------

def acc_rt(dt):
    """the relative precision sums of that dtype are accumulated in (PyTorch: f32 for f16/bf16)"""
    return RT["f64"] if dt == "f64" else RT["f32"]


def bound(cls, dt, tv, red, scale):
    r = RT.get(dt, 0.0)
    a = abs(tv)
    red = max(1, red or 1)
    scale = scale or 0.0
    if cls == "exact" or cls == "disc" or dt not in RT:
        return np.zeros_like(tv)
    if cls == "round":
        return 2 * r * a + r * scale
    if cls == "trans":
        return 8 * r * a + 8 * r * scale
    if cls == "reduce":
        return 2 * r * a + acc_rt(dt) * (red + 4) * max(scale, 1e-300) * 2
    if cls == "prod":
        return (2 * r + acc_rt(dt) * (red + 2) * 2) * a
    if cls == "var":
        return 4 * r * a + acc_rt(dt) * (red + 4) * 8 * scale * scale
    if cls == "softmax":
        return 8 * r * a + acc_rt(dt) * (red + 8) * 8 * max(scale, 1.0)
    if cls == "matmul":
        return 2 * r * a + acc_rt(dt) * (red + 2) * 4 * max(scale, 1e-300)
    if cls == "norm":
        m = float(np.max(np.abs(tv[np.isfinite(tv)]))) if np.isfinite(tv).any() else 1.0
        return 8 * r * a + acc_rt(dt) * (red + 8) * 64 * max(1.0, m) + acc_rt(dt) * (red + 8) * 8 * scale
    return 2 * r * a


def fmt_vals(v, n=8):
    if len(v) > n:
        return "[" + ", ".join("%.9g" % x for x in v[:n]) + ", ... (%d)]" % len(v)
    return "[" + ", ".join("%.9g" % x for x in v) + "]"


def describe(rec, offset=0):
    if rec is None:
        return "nothing"
    if rec[0] == "T":
        return "%s %s %s" % (rec[1], list(rec[2]), fmt_vals(rec[5] - offset))
    if rec[0] == "N":
        return "number %.17g" % (rec[1] - offset)
    if rec[0] == "X":
        return "an error reading it: " + rec[1]
    return rec[0]


def norm_msg(s):
    s = re.sub(r"\[[-0-9, ]*\]", "[..]", s or "")
    s = re.sub(r"\b(Float|Double|Half|BFloat16|Long|Int|Bool|Byte|Char|Short|long int|int|unsigned char|signed char|"
               r"bool|float|double)\b", "T", s)
    s = re.sub(r"\b(f16|bf16|f32|f64|i8|u8|i32|i64)\b", "T", s)
    s = re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "N", s)
    s = re.sub(r"\bv\d+\b", "v", s)
    return s[:70]


class Compare:
    """compares one program's two runs"""

    def __init__(self, prog, trec, nrec):
        self.prog, self.trec, self.nrec = prog, trec, nrec
        self.groups = prog["groups"]
        self.index = set(prog["index"])
        self.layout = set(prog["layout"])
        self.inexact = set()        # groups whose values differed (within tolerance) somewhere
        self.inexact_disc = set()   # ... integer or bool values among them
        self.mismatches = []
        self.notes = []
        self.last = {}
        self.diverged = set()       # groups whose dtype differs by an allowed difference
        self.delta = {}             # group -> the largest relative difference seen in its values
        self.allowed_dtype = []

    def mm(self, kind, k, op, detail, **kw):
        m = {"kind": kind, "step": k, "op": op, "detail": detail}
        m.update(kw)
        self.mismatches.append(m)
        return m

    def cmp_rec(self, k, st, name, t, n, where="step"):
        """compares one value; returns None or a mismatch"""
        op = st["op"] if st else where
        idx = name in self.index
        off = 1 if idx else 0
        g = self.groups.get(name)
        ins = st["ins"] if st else [name]
        in_inexact = any(self.groups.get(v) in self.inexact for v in ins)
        in_disc_inexact = any(self.groups.get(v) in self.inexact_disc for v in ins)
        if st is None:
            in_inexact = g in self.inexact
            in_disc_inexact = g in self.inexact_disc
        cls = st["cls"] if st else ("exact" if not in_inexact else "round")
        if n is None:
            return self.mm("missing", k, op, "%s: nnrun recorded no value" % name, torch=describe(t))
        if n[0] == "X":
            return self.mm("read-error", k, op, "%s: reading nnrun's value failed: %s" % (name, n[1]), torch=describe(t))
        if t[0] != n[0]:
            if t[0] == "N" and n[0] == "T" and n[2] == () or t[0] == "T" and n[0] == "N" and t[2] == ():
                pass
            else:
                return self.mm("type", k, op, "%s: PyTorch gives %s, nnrun %s" % (name, describe(t), describe(n, off)))
        if t[0] == "nil" or t[0] == "O":
            return None
        if t[0] == "N" or n[0] == "N":
            tv = np.array([t[1]] if t[0] == "N" else t[5])
            nv = np.array([n[1]] if n[0] == "N" else n[5]) - off
            tdt = ndt = "number"
        else:
            tdt, ndt = t[1], n[1]
            if tuple(t[2]) != tuple(n[2]):
                return self.mm("shape", k, op, "%s: shape %s in PyTorch, %s in nnrun" % (name, list(t[2]), list(n[2])),
                               torch=describe(t), nnr=describe(n, off), tdtype=tdt, ndtype=ndt)
            if tdt != ndt:
                if any(self.groups.get(v) in self.diverged for v in ins):
                    self.notes.append("step %d %s: dtype %s vs %s downstream of an allowed dtype difference" % (
                        k, name, tdt, ndt))
                    if g is not None:
                        self.diverged.add(g)
                        self.inexact.add(g)
                        self.inexact_disc.add(g)
                    return None
                m = self.mm("dtype", k, op, "%s: dtype %s in PyTorch, %s in nnrun" % (name, tdt, ndt), torch=tdt, nnr=ndt,
                            bool_int_scalar=st.get("bool_int_scalar") if st else False,
                            zero_dim_mix=st.get("zero_dim_mix") if st else False)
                if not self.allowed(m):
                    return m
                self.allowed_dtype.append(m["allowed"])
                self.mismatches.remove(m)
                if g is not None:  # what follows from it is not a finding of its own
                    self.diverged.add(g)
                    if m["allowed"] != "i16-as-i32":
                        self.inexact.add(g)
                        self.inexact_disc.add(g)
            tv, nv = t[5], n[5] - off
            if name in self.layout and st is not None and len(tv) > 0:
                bad = [d for d, s in enumerate(t[2]) if s > 1 and t[3][d] != n[3][d]]
                if bad or t[4] != n[4]:
                    self.mm("layout", k, op, "%s: strides %s offset %d in PyTorch, strides %s offset %d in nnrun" % (
                        name, list(t[3]), t[4], list(n[3]), n[4]))
        if len(tv) != len(nv):
            return self.mm("shape", k, op, "%s: %d values in PyTorch, %d in nnrun" % (name, len(tv), len(nv)))
        same = np.array_equal(tv, nv, equal_nan=True)
        if same:
            return None
        disc_out = tdt in ("bool", "i8", "u8", "i16", "i32", "i64", "number") and not (tdt == "number" and cls != "disc")
        delta_in = max([self.delta.get(self.groups.get(v), 0.0) for v in ins] + [0.0])
        if g is not None:
            f = np.isfinite(tv) & np.isfinite(nv)
            if f.any():
                d = min(1.0, float(np.max(np.abs(tv[f] - nv[f]) / (np.abs(tv[f]) + 1e-300))))
                self.delta[g] = max(self.delta.get(g, 0.0), d)
            self.inexact.add(g)
            if disc_out:
                self.inexact_disc.add(g)
        # amplification of an earlier difference: not a finding of its own (a comparison, an index or an
        # integer of a value that differs in its last bit; a copy, view or selection of a differing value)
        if in_disc_inexact or (in_inexact and (cls in ("disc", "exact") or disc_out)):
            self.notes.append("step %d %s: differs downstream of an inexact value (not counted)" % (k, name))
            return None
        dt = ndt if ndt in RT else tdt
        if st and st.get("num_dt") and tdt == "number":
            dt = st["num_dt"]
        if st and st.get("tol_dt") in RT and RT[st["tol_dt"]] > RT.get(dt, 0):
            dt = st["tol_dt"]
        nan_t, nan_n = np.isnan(tv), np.isnan(nv)
        fin = np.isfinite(tv) & np.isfinite(nv)
        bad_special = (nan_t != nan_n) | ((~np.isfinite(tv) | ~np.isfinite(nv)) & ~(nan_t & nan_n) & (tv != nv))
        b = bound(cls, dt, tv, st.get("red", 1) if st else 1, st.get("scale", 0) if st else 0)
        if in_inexact:
            # inputs that already differ: the difference they carry (relative, measured) may grow with the op
            r_in = max([RT.get(dt, 0), delta_in] + [RT.get(d, 0) for d in (st.get("in_dts", []) if st else [])])
            sc = (st.get("scale", 0) if st else 0) * max(1, st.get("red", 1) if st else 1)
            b = 64 * b + 64 * r_in * (np.abs(tv) + sc + 1e-300)
        err = np.where(fin, np.abs(tv - nv), 0.0)
        over = fin & (err > b)
        if in_inexact and bad_special.any() and not over.any():
            self.notes.append("step %d %s: inf/nan differ downstream of an inexact value" % (k, name))
            return None
        if not over.any() and not bad_special.any():
            return None
        i = int(np.argmax(over | bad_special))
        kind = "value" if cls not in ("exact", "disc") or in_inexact else ("value-exact" if cls == "exact" else "value")
        if tdt == "number":
            kind = "value"
        return self.mm(kind, k, op, "%s[%d]: PyTorch %.17g, nnrun %.17g (%s, tolerance %.3g)" % (
            name, i, tv[i], nv[i] + off, cls, float(b[i]) if b.ndim else float(b)),
            torch=describe(t), nnr=describe(n, off), tdtype=tdt, ndtype=ndt,
            bool_int_scalar=st.get("bool_int_scalar") if st else False,
            neg_inf_base=st.get("neg_inf_base") if st else False, tval=float(tv[i]), nval=float(nv[i]))

    def allowed(self, m):
        for a in ALLOW_LIST:
            try:
                if a["match"](m):
                    m["allowed"] = a["id"]
                    return True
            except Exception:
                pass
        return False

    def run(self):
        prog, trec, nrec = self.prog, self.trec, self.nrec
        steps = prog["steps"]
        te, ne = trec["error"], nrec.get("error")
        both_raised = False
        for k, st in enumerate(steps, 1):
            t_here = te is not None and te[0] == k
            n_here = ne is not None and ne[0] == k
            if t_here or n_here:
                if t_here and n_here:
                    both_raised = True
                elif any(self.groups.get(v) in self.diverged for v in st["ins"]):
                    self.notes.append("step %d: one side raised, downstream of an allowed dtype difference" % k)
                elif t_here and trec.get("alt_grads") is not None and st["op"] == "loss.backward":
                    n0 = len(self.mismatches)
                    self.cmp_grads(k, trec["alt_grads"])
                    if len(self.mismatches) == n0:
                        self.mm("saved-tensor-strategy", k, st["op"], "PyTorch raised (%s); nnrun's gradients match "
                                "PyTorch's with saved tensors cloned" % te[1])
                elif t_here:
                    self.mm("nnr-accepts", k, st["op"], "PyTorch raised (%s), nnrun did not" % te[1],
                            torch_error=te[1], bool_int_scalar=st.get("bool_int_scalar"),
                            nnr=describe(next(iter(nrec["steps"].get(k, {}).values()), None)))
                else:
                    self.mm("nnr-raises", k, st["op"], "nnrun raised (%s), PyTorch did not" % ne[1], nnr_error=ne[1],
                            grad_view_inplace=st.get("grad_view_inplace"),
                            torch=describe(next(iter(trec["steps"].get(k, {}).values()), None)))
                break
            trs = trec["steps"].get(k, {})
            nrs = nrec["steps"].get(k)
            if nrs is None:
                self.mm("missing", k, st["op"], "nnrun recorded nothing for this step")
                break
            for o in st["outs"]:
                self.cmp_rec(k, st, o, trs.get(o), nrs.get(o))
                self.last[o] = (trs.get(o), nrs.get(o))
        else:
            last = len(steps)
            for name, t in trec["final"].items():
                n = nrec["final"].get(name)
                if n is None:
                    continue
                if name in self.last and same_rec(self.last[name][0], t) and same_rec(self.last[name][1], n):
                    continue  # unchanged since its step compared it
                self.cmp_rec(last, None, name, t, n, where="final values (after the last step)")
            if trec["grads"]:
                self.cmp_grads(last)
        for m in self.mismatches:
            if "allowed" not in m:
                self.allowed(m)
        bad = [m for m in self.mismatches if "allowed" not in m]
        if bad:
            return "disagree"
        return "both-raised" if both_raised else "agreed"

    def cmp_grads(self, last, ref=None):
        lowest = "f64"
        for recs in self.trec["steps"].values():
            for r in recs.values():
                if r[0] == "T" and r[1] in ("f32", "f16", "bf16"):
                    if ["f64", "f32", "bf16", "f16"].index(r[1]) > ["f64", "f32", "bf16", "f16"].index(lowest):
                        lowest = r[1]
        rtol = {"f64": 1e-8, "f32": 2e-4, "bf16": 8e-2, "f16": 2e-2}[lowest]
        ref = ref if ref is not None else self.trec["grads"]
        # an absolute floor from the largest gradient of any leaf: a leaf whose gradient cancels to ~0
        # carries the rounding of the others
        big = 1.0
        for t in ref.values():
            if t[0] == "T" and len(t[5]) and np.isfinite(t[5]).any():
                big = max(big, float(np.max(np.abs(t[5][np.isfinite(t[5])]))))
        for name, t in ref.items():
            n = self.nrec["grads"].get(name)
            op = "grad of " + name
            if n is None or n[0] == "X":
                self.mm("grad", last, op, "nnrun gave no record for %s.grad" % name)
                continue
            if t[0] == "nil" and n[0] == "nil":
                continue
            if t[0] == "nil" or n[0] == "nil":
                zero = (n[0] == "T" and not np.any(n[5])) if t[0] == "nil" else False
                self.mm("grad-none", last, op, "%s.grad: PyTorch %s, nnrun %s" % (name, describe(t), describe(n)),
                            nnr_zero=zero)
                continue
            if tuple(t[2]) != tuple(n[2]) or t[1] != n[1]:
                self.mm("grad-shape", last, op, "%s.grad: PyTorch %s %s, nnrun %s %s" % (name, t[1], list(t[2]), n[1],
                                                                                        list(n[2])))
                continue
            tv, nv = t[5], n[5]
            if np.array_equal(tv, nv, equal_nan=True):
                continue
            scale = float(np.max(np.abs(tv[np.isfinite(tv)]))) if np.isfinite(tv).any() else 1.0
            b = rtol * (np.abs(tv) + scale + 1e-3 * big)
            fin = np.isfinite(tv) & np.isfinite(nv)
            bad = (~fin & ~(np.isnan(tv) & np.isnan(nv)) & (tv != nv)) | (fin & (np.abs(tv - nv) > b))
            if bad.any():
                i = int(np.argmax(bad))
                self.mm("grad", last, op, "%s.grad[%d]: PyTorch %.17g, nnrun %.17g (rtol %g, program precision %s)" % (
                    name, i, tv[i], nv[i], rtol, lowest), torch=describe(t), nnr=describe(n),
                    nnr_nan=bool(np.isnan(nv[i]) and not np.isnan(tv[i])))


def same_rec(a, b):
    if a is None or b is None or a[0] != b[0]:
        return False
    if a[0] == "T":
        return a[1] == b[1] and tuple(a[2]) == tuple(b[2]) and np.array_equal(a[5], b[5], equal_nan=True)
    if a[0] == "N":
        return a[1] == b[1] or (a[1] != a[1] and b[1] != b[1])
    return True


def signature(m):
    if m["kind"] == "nnr-accepts":
        return "%s %s: %s" % (m["kind"], m["op"], norm_msg(m.get("torch_error")))
    if m["kind"] == "nnr-raises":
        return "%s %s: %s" % (m["kind"], m["op"], norm_msg(m.get("nnr_error")))
    if m["kind"] in ("dtype",):
        if m.get("zero_dim_mix"):
            return "dtype: promotion with a 0-d tensor operand (%s)" % m["op"].split(".")[0]
        return "%s %s: %s vs %s" % (m["kind"], m["op"], m.get("torch"), m.get("nnr"))
    if m["kind"].startswith("grad"):
        if m.get("nnr_nan"):
            return "%s: nnrun gives NaN" % m["kind"]
        return "%s: values differ" % m["kind"]
    return "%s %s %s" % (m["kind"], m["op"], m.get("tdtype", ""))


# -----------------------------------------------------------------------------------------------
# findings and reproductions
# -----------------------------------------------------------------------------------------------

def render(prog, lang):
    lines = []
    if lang == "lua":
        lines.append('local nnr = require "nnr"   -- nnrun repro.lua')
        for s in prog["steps"]:
            lines.append(s["lua"])
    else:
        lines.append("import torch; import torch.nn.functional as F")
        for s in prog["steps"]:
            lines.append(s["py"])
    return "\n".join(lines)


class Findings:
    def __init__(self, runner, minimize=True, max_minimize=25, out=sys.stdout):
        self.runner = runner
        self.groups = {}   # signature -> {"count", "seeds", "first": (prog, mismatch)}
        self.allowed = {}
        self.crashes = []
        self.do_min = minimize
        self.max_min = max_minimize
        self.out = out

    def crash(self, prog, info, alone):
        sig = "crash %s" % ("hang" if info["hung"] else signame(info["rc"]))
        self.crashes.append((prog, info, alone))
        g = self.groups.setdefault(sig, {"count": 0, "seeds": [], "first": None})
        g["count"] += 1
        g["seeds"].append(prog["seed"])
        if g["first"] is None:
            g["first"] = (prog, {"kind": "crash", "step": len(prog["steps"]), "op": "crash",
                                 "detail": "nnrun %s while running this program%s; its output ends:\n%s" % (
                                     "hung" if info["hung"] else "died (%s)" % signame(info["rc"]),
                                     " (alone too)" if alone else " (not alone: it needs the programs before it)",
                                     "\n".join("    " + l for l in info["stderr"].strip().splitlines()[-8:]))})

    def add(self, prog, cmp):
        for a in [m["allowed"] for m in cmp.mismatches if "allowed" in m] + cmp.allowed_dtype:
            self.allowed[a] = self.allowed.get(a, 0) + 1
        bad = [m for m in cmp.mismatches if "allowed" not in m]
        if not bad:
            return
        m = bad[0]
        sig = signature(m)
        g = self.groups.setdefault(sig, {"count": 0, "seeds": [], "first": None})
        g["count"] += 1
        g["seeds"].append(prog["seed"])
        if g["first"] is None:
            g["first"] = (prog, m)

    def reproduces(self, prog_steps, seed, kind, sig):
        p, trec = make_program(seed, kind, prog_steps)
        res, crash = self.runner.run([p])
        if sig.startswith("crash"):
            return crash is not None
        if crash is not None or seed not in res:
            return False
        c = Compare(p, trec, res[seed])
        c.run()
        return any(signature(m) == sig for m in c.mismatches if "allowed" not in m)

    def minimize(self, prog, m, sig):
        steps = prog["steps"][:max(1, m["step"])]
        if m["kind"].startswith("grad") or m["op"].startswith("final"):
            steps = prog["steps"]
        if not self.reproduces(steps, prog["seed"], prog["kind"], sig):
            return prog["steps"]
        changed = True
        tries = 0
        while changed and tries < 200:
            changed = False
            last = len(steps) if sig.startswith("crash") else len(steps) - 1
            for i in reversed(range(last)):
                if i >= len(steps) - (0 if sig.startswith("crash") else 1):
                    continue
                tries += 1
                cand = steps[:i] + steps[i + 1:]
                if self.reproduces(cand, prog["seed"], prog["kind"], sig):
                    steps = cand
                    changed = True
        return steps

    def report(self):
        w = self.out.write
        n = 0
        for sig, g in sorted(self.groups.items(), key=lambda kv: (-kv[1]["count"], kv[0])):
            n += 1
            prog, m = g["first"]
            w("\n=== finding %d: %s\n    in %d program(s), seeds %s%s\n" % (
                n, sig, g["count"], ", ".join(map(str, g["seeds"][:12])), " ..." if len(g["seeds"]) > 12 else ""))
            w("    step %s (%s): %s\n" % (m["step"], m["op"], m["detail"]))
            for key in ("torch", "nnr"):
                if m.get(key) and key in m and m["kind"] not in ("dtype",):
                    w("    %s: %s\n" % ("PyTorch" if key == "torch" else "nnrun  ", m[key]))
            steps = prog["steps"]
            if self.do_min and n <= self.max_min:
                try:
                    steps = self.minimize(prog, m, sig)
                except Exception as e:  # keep the unminimized program
                    w("    (minimizing failed: %s)\n" % e)
            short = dict(prog, steps=steps)
            w("  nnrun (tests/difffuzz/difffuzz.py --seed %d --verbose for the whole program):\n" % prog["seed"])
            w("".join("    " + l + "\n" for l in render(short, "lua").splitlines()))
            w("  PyTorch:\n")
            w("".join("    " + l + "\n" for l in render(short, "py").splitlines()))
        if self.allowed:
            w("\nallowed differences (ALLOW_LIST in tests/difffuzz/difffuzz.py):\n")
            for a in ALLOW_LIST:
                if a["id"] in self.allowed:
                    w("  %-24s %5d  %s\n" % (a["id"], self.allowed[a["id"]], a["reason"]))


# -----------------------------------------------------------------------------------------------
# main
# -----------------------------------------------------------------------------------------------

def parse_seeds(s):
    if ":" in s:
        a, b = s.split(":")
        return list(range(int(a), int(b)))
    return [int(x) for x in s.split(",")]


def verbose_program(prog, trec, nrec, cmp, outcome):
    print("--- seed %d (%s program), %d steps" % (prog["seed"], prog["kind"], len(prog["steps"])))
    print("--- nnrun:")
    print(render(prog, "lua"))
    print("--- PyTorch:")
    print(render(prog, "py"))
    print("--- step by step:")
    for k, st in enumerate(prog["steps"], 1):
        print("[%d] %s (%s)" % (k, st["op"], st["cls"]))
        for o in st["outs"]:
            t = trec["steps"].get(k, {}).get(o)
            n = (nrec or {}).get("steps", {}).get(k, {}).get(o)
            off = 1 if o in prog["index"] else 0
            print("    %s  PyTorch: %s" % (o, describe(t)))
            print("    %s  nnrun:   %s" % (" " * len(o), describe(n, off)))
        if trec["error"] and trec["error"][0] == k:
            print("    PyTorch raised: %s" % trec["error"][1])
        if nrec and nrec.get("error") and nrec["error"][0] == k:
            print("    nnrun raised:   %s" % nrec["error"][1])
    for name, t in trec["grads"].items():
        n = (nrec or {}).get("grads", {}).get(name)
        print("    %s.grad PyTorch: %s" % (name, describe(t)))
        print("    %s      nnrun:   %s" % (" " * len(name), describe(n)))
    if cmp is not None:
        for m in cmp.mismatches:
            print("MISMATCH%s step %s %s: %s" % (" (allowed: %s)" % m["allowed"] if "allowed" in m else "", m["step"],
                                                 m["op"], m["detail"]))
        for note in cmp.notes:
            print("note: " + note)
    print("--- outcome: %s" % outcome)


def main():
    global torch, np
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nnrun", default=os.path.join(HERE, "..", "..", "build", "bin", "nnrun"))
    ap.add_argument("--seeds", default="0:300", help="A:B (a range) or a comma-separated list")
    ap.add_argument("--seed", type=int, help="one program")
    ap.add_argument("--verbose", action="store_true", help="print the program(s) in both languages, step by step")
    ap.add_argument("--json", action="store_true", help="with --verbose: print the programs as JSON too")
    ap.add_argument("--batch", type=int, default=400, help="programs per nnrun process")
    ap.add_argument("--threads", type=int, default=2, help="NNR_NUM_THREADS for nnrun")
    ap.add_argument("--no-minimize", action="store_true", help="report findings without shrinking them")
    ap.add_argument("--keep", action="store_true", help="keep the batch and results files (their folder is printed)")
    args = ap.parse_args()
    try:
        import torch as _torch
        import numpy as _np
    except Exception as e:
        print("skipped: PyTorch cannot be imported (%s); needs %s" % (e, TORCH_PYTHON_HINT))
        sys.exit(77)
    torch, np = _torch, _np
    torch.set_num_threads(1)
    np.seterr(all="ignore")
    if not os.access(args.nnrun, os.X_OK):
        print("difffuzz: %s is not an executable nnrun" % args.nnrun, file=sys.stderr)
        sys.exit(2)
    seeds = [args.seed] if args.seed is not None else parse_seeds(args.seeds)
    runner = Runner(os.path.abspath(args.nnrun), threads=args.threads, keep=args.keep)
    findings = Findings(runner, minimize=not args.no_minimize)
    counts = {"agreed": 0, "both-raised": 0, "disagree": 0}
    t0 = time.time()
    try:
        run_batches(args, seeds, runner, findings, counts, t0)
    except HarnessError as e:
        print("difffuzz: %s" % e, file=sys.stderr)
        if not args.keep:
            shutil.rmtree(runner.tmp, ignore_errors=True)
        sys.exit(2)
    elapsed = time.time() - t0
    findings.report()
    total = sum(counts.values())
    print("\n%d programs in %.1f s (%.0f programs/s), %d crash(es), %d distinct finding(s)" % (
        total, elapsed, total / max(elapsed, 1e-9), len(findings.crashes), len(findings.groups)))
    if args.keep:
        print("batch and results files kept in %s" % runner.tmp)
    else:
        shutil.rmtree(runner.tmp, ignore_errors=True)
    print("%d programs, %d agreed, %d both-raised, %d disagreements" % (
        total, counts["agreed"], counts["both-raised"], counts["disagree"]))
    sys.exit(1 if counts["disagree"] or findings.crashes else 0)


class HarnessError(Exception):
    pass


def run_batches(args, seeds, runner, findings, counts, t0):
    batches = [seeds[i:i + args.batch] for i in range(0, len(seeds), args.batch)]

    def build(batch):
        return [make_program(s) for s in batch]

    built = build(batches[0]) if batches else []
    for bi, batch in enumerate(batches):
        progs = [p for p, _ in built]
        trecs = {p["seed"]: t for p, t in built}
        h = runner.start(progs)
        nxt = None
        if bi + 1 < len(batches):  # the next batch's PyTorch side runs while nnrun runs this one (2 cores)
            nxt = build(batches[bi + 1])
        res, crash = runner.wait(h)
        if crash is not None:
            done = {i: r for i, r in res.items() if r["done"]}
            rest = [p for p in progs if p["seed"] not in done]
            done.update(runner.run_all(rest, findings))
            res = done
        for p in progs:
            s = p["seed"]
            r = res.get(s)
            if r is None or "crash" in r:
                counts["disagree"] += 1
                if args.verbose:
                    verbose_program(p, trecs[s], None, None, "crash")
                continue
            c = Compare(p, trecs[s], r)
            outcome = c.run()
            counts[outcome] += 1
            findings.add(p, c)
            if args.verbose:
                verbose_program(p, trecs[s], r, c, outcome)
                if args.json:
                    print(json.dumps(p, indent=1))
        if len(batches) > 1:
            print("... %d/%d programs, %d disagreements, %.0f s" % (sum(counts.values()), len(seeds), counts["disagree"],
                                                                      time.time() - t0), file=sys.stderr, flush=True)
        built = nxt


if __name__ == "__main__":
    main()
