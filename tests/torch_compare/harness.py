"""Side-by-side checks of nnrun against PyTorch: the same inputs, the same code in both languages.

A suite is a list of cases. Each case names its inputs (random tensors made by the suite, the same
values in both languages), a Lua body and a Python body. The bodies see the inputs as x1, x2, ...;
Lua also has nnr, nn (nnr.nn), F (nnr.nn.functional), P and G; Python has torch, nn, F
(torch.nn.functional), P and G. A body returns a tensor, a number, a boolean, or several of them
(Lua: several return values or one list; Python: a tuple or a list).

    import harness
    s = harness.Suite("native_ops")
    x = s.tensor([3, 4], dtype="f64", layout="transposed")
    s.case("sort along dim 2, descending", [x],
           lua="return x1:sort(2, true)",
           py="v, i = torch.sort(x1, 1, descending=True, stable=True); return v, i + 1", grad=True)
    s.raises("sort: dimension out of range", [x], lua="return x1:sort(3)", py="return torch.sort(x1, 2)")
    s.run()

Inputs (s.tensor(shape, dtype="f64", layout="contiguous", low=-2, high=2, values=None)):
  - dtype: f64 f32 f16 bf16 i64 i32 i8 u8 bool; integers are drawn in [low, high], bools at random;
    values= gives the flat values (nan and inf allowed) instead of random ones.
  - layout: "contiguous"; "transposed" (stored with the last two dims swapped, then transposed: a
    non-contiguous view); "strided" (every other element of a twice-as-long last dim); "expanded"
    (stored with a first dim of 1, expanded to shape[0]: a zero stride).
  - With grad=True (or requires_grad=True, which stops there), float inputs require grad. The gradient lands on the stored tensor (before the
    view), which is what is compared. A fixed weighting (sin of the flat index) of every float
    output that requires grad is summed and back-propagated, in both languages.
  - params={"weight": s.tensor(...), ...} gives P.weight (Lua and Python) as leaves: with grad=True
    they require grad and their gradients are compared too. A body may also append tensors to G
    (Lua: G[#G + 1] = m.weight; Python: G.append(m.weight)); their .grad are compared after the
    backward (module parameters: load the same values into both models first).

s.module_case(name, inputs, lua_ctor, py_ctor, lua_body, py_body, params) builds a module in both
languages, loads params into it (strict) and puts its parameters in G before the bodies run.

Outputs are compared by shape, dtype (unless check_dtype=False) and value: integers and booleans
exactly, floats within atol + rtol * |torch's| (per-dtype defaults; atol=, rtol= override), NaN where
NaN is. s.raises() passes when both sides raise. expect_fail=True marks a case that differs on
purpose: it passes when the difference is reported (the harness checking itself). The command line: --nnrun PATH (default
build/bin/nnrun), -k SUBSTRING (only the cases whose name holds it), -v (print every case). The last
line is "N passed, N failed"; the exit status is 1 on a failure and 77 when PyTorch is missing.
"""
import argparse
import math
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import types

DTYPES = {"f64": "float64", "f32": "float32", "f16": "float16", "bf16": "bfloat16", "i64": "int64",
          "i32": "int32", "i8": "int8", "u8": "uint8", "bool": "bool"}
FLOATS = ("f64", "f32", "f16", "bf16")
TOL = {"f64": (1e-10, 1e-9), "f32": (1e-5, 1e-5), "f16": (2e-3, 2e-3), "bf16": (2e-2, 2e-2)}
LAYOUTS = ("contiguous", "transposed", "strided", "expanded")


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


class Input:
    def __init__(self, shape, dtype, layout, values):
        self.shape, self.dtype, self.layout, self.values = list(shape), dtype, layout, values

    def stored_shape(self):
        s = list(self.shape)
        if self.layout == "transposed":
            s[-1], s[-2] = s[-2], s[-1]
        elif self.layout == "strided":
            s[-1] *= 2
        elif self.layout == "expanded":
            s[0] = 1
        return s


def lua_num(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "0/0"
        if math.isinf(v):
            return "1/0" if v > 0 else "-1/0"
        if v == 0 and math.copysign(1, v) < 0:
            return "-0.0"
        return repr(v)
    return str(v)


def py_num(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return "float('%s')" % v
    return repr(v)


def lua_tensor(inp):
    shape = inp.stored_shape()
    opts = '{dtype = "%s"}' % inp.dtype
    sizes = "{" + ", ".join(str(s) for s in shape) + "}"
    if numel(shape) == 0:
        return "nnr.zeros(%s, %s)" % (sizes, opts)
    flat = "{" + ", ".join(lua_num(v) for v in inp.values) + "}"
    if not shape:
        return "nnr.tensor(%s, %s)" % (lua_num(inp.values[0]), opts)
    return "nnr.tensor(%s, %s):view(%s)" % (flat, opts, sizes)


def py_tensor(inp):
    shape = inp.stored_shape()
    dt = "torch." + DTYPES[inp.dtype]
    if numel(shape) == 0:
        return "torch.zeros(%r, dtype=%s)" % (tuple(shape), dt)
    if not shape:
        return "torch.tensor(%s, dtype=%s)" % (py_num(inp.values[0]), dt)
    flat = "[" + ", ".join(py_num(v) for v in inp.values) + "]"
    return "torch.tensor(%s, dtype=%s).view(%r)" % (flat, dt, tuple(shape))


def view_code(inp, name, lang):
    """the input as the body sees it, from the stored tensor `name`"""
    n = len(inp.shape)
    if inp.layout == "transposed":
        return "%s:transpose(-1, -2)" % name if lang == "lua" else "%s.transpose(-1, -2)" % name
    if inp.layout == "strided":
        lead = inp.shape[:-1]
        dims = lead + [inp.shape[-1], 2]
        if lang == "lua":
            return "%s:view({%s}):select(%d, 1)" % (name, ", ".join(map(str, dims)), n + 1)
        return "%s.view(%r).select(%d, 0)" % (name, tuple(dims), n)
    if inp.layout == "expanded":
        if lang == "lua":
            return "%s:expand({%s})" % (name, ", ".join(map(str, inp.shape)))
        return "%s.expand(%r)" % (name, tuple(inp.shape))
    return name


LUA_PRELUDE = r'''
local nnr = require "nnr"
local nn, F = nnr.nn, nnr.nn.functional
local function num(v)
  if v ~= v then return "nan" end
  if v == 1 / 0 then return "inf" end
  if v == -1 / 0 then return "-inf" end
  return string.format("%.17g", v)
end
local function emit(tag, case, k, v)
  if v == nil then io.write(tag, " ", case, " ", k, " nil\n"); return end
  if type(v) == "number" then io.write(tag, " ", case, " ", k, " n f64 [] ", num(v), "\n"); return end
  if type(v) == "boolean" then io.write(tag, " ", case, " ", k, " n bool [] ", v and "1" or "0", "\n"); return end
  if not nnr.is_tensor(v) then io.write(tag, " ", case, " ", k, " bad ", type(v), "\n"); return end
  local d = v:detach():to("f64"):contiguous():view(-1)
  local parts = {}
  for i = 1, d:numel() do parts[i] = num(d[i]) end
  io.write(tag, " ", case, " ", k, " t ", v.dtype, " [", table.concat(v:size(), ","), "] ", table.concat(parts, " "), "\n")
end
local function weights(n, k)
  return nnr.no_grad(function() return nnr.arange(n, {dtype = "f64"}):mul(1.7):add(0.3 * k + 0.5):sin():add(0.1) end)
end
local function finish(case, outs, leaves, G, grad)
  for k = 1, #outs do emit("V", case, k, outs[k]) end
  if not grad then return end
  local loss
  for k = 1, #outs do
    local o = outs[k]
    if nnr.is_tensor(o) and o.requires_grad then
      local term = (o:to("f64") * weights(o:numel(), k):view(o:size())):sum()
      loss = loss and loss + term or term
    end
  end
  if not loss then io.write("NOGRAD ", case, "\n"); return end
  loss:backward()
  for k = 1, #leaves do emit("G", case, k, leaves[k].grad) end
  for k = 1, #G do emit("G", case, #leaves + k, G[k].grad) end
end
local function pack(...) return { n = select("#", ...), ... } end
local function run(case, fn)
  local ok, err = pcall(fn)
  if not ok then io.write("E ", case, " ", (tostring(err):gsub("\n", " ")), "\n") end
  io.flush()
end
'''

PY_PRELUDE = r'''
import math, sys, types
import torch
import torch.nn as nn
import torch.nn.functional as F
torch.set_num_threads(1)
NAMES = {torch.float64: "f64", torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16",
         torch.int64: "i64", torch.int32: "i32", torch.int8: "i8", torch.uint8: "u8", torch.bool: "bool"}
def _num(v):
    if isinstance(v, float):
        if math.isnan(v): return "nan"
        if math.isinf(v): return "inf" if v > 0 else "-inf"
        return "%.17g" % v
    return str(int(v))
def emit(tag, case, k, v):
    if v is None: print(tag, case, k, "nil"); return
    if isinstance(v, bool): print(tag, case, k, "n bool []", int(v)); return
    if isinstance(v, (int, float)): print(tag, case, k, "n f64 []", _num(float(v))); return
    if not isinstance(v, torch.Tensor): print(tag, case, k, "bad", type(v).__name__); return
    d = v.detach()
    flat = d.double().reshape(-1).tolist() if d.is_floating_point() else d.reshape(-1).tolist()
    print(tag, case, k, "t", NAMES.get(v.dtype, str(v.dtype)), "[" + ",".join(str(s) for s in v.shape) + "]",
          " ".join(_num(float(x)) if d.is_floating_point() else _num(x) for x in flat))
def weights(n, k):
    with torch.no_grad():
        return torch.arange(n, dtype=torch.float64).mul(1.7).add(0.3 * k + 0.5).sin().add(0.1)
def finish(case, outs, leaves, G, grad):
    for k, o in enumerate(outs, 1): emit("V", case, k, o)
    if not grad: return
    loss = None
    for k, o in enumerate(outs, 1):
        if isinstance(o, torch.Tensor) and o.requires_grad:
            term = (o.to(torch.float64) * weights(o.numel(), k).view(o.shape)).sum()
            loss = term if loss is None else loss + term
    if loss is None: print("NOGRAD", case); return
    loss.backward()
    for k, l in enumerate(leaves, 1): emit("G", case, k, l.grad)
    for k, g in enumerate(G, len(leaves) + 1): emit("G", case, k, g.grad)
def run(case, fn):
    try:
        fn()
    except Exception as e:
        print("E", case, str(e).replace("\n", " "))
    sys.stdout.flush()
'''


class Case:
    def __init__(self, name, inputs, lua, py, grad, params, atol, rtol, check_dtype, raises):
        self.name, self.inputs, self.lua, self.py, self.grad = name, inputs, lua, py, grad
        self.params, self.atol, self.rtol, self.check_dtype, self.raises = params or {}, atol, rtol, check_dtype, raises
        self.expect_fail = False
        self.requires_grad = grad


MODULE_LUA = """local m = %s
m:double()
local sd = {}
for k, v in pairs(P) do sd[k] = v end
m:load_state_dict(sd)
%s
for _, np in ipairs(m:named_parameters()) do G[#G + 1] = np[2] end
%s"""
MODULE_PY = """m = %s
m.double()
m.load_state_dict(dict(vars(P)))
%s
for _, p in m.named_parameters(): G.append(p)
%s"""


class Suite:
    def __init__(self, name, seed=1234):
        self.name = name
        self.rng = random.Random(seed)
        self.cases = []

    def tensor(self, shape, dtype="f64", layout="contiguous", low=-2, high=2, values=None):
        if dtype not in DTYPES:
            raise ValueError("harness: unknown dtype %r" % dtype)
        if layout not in LAYOUTS:
            raise ValueError("harness: unknown layout %r" % layout)
        if layout == "transposed" and len(shape) < 2 or layout in ("strided", "expanded") and len(shape) < 1:
            raise ValueError("harness: layout %s needs more dimensions than %r" % (layout, shape))
        inp = Input(shape, dtype, layout, None)
        n = numel(inp.stored_shape())
        if values is not None:
            values = list(values)
            if len(values) != n:
                raise ValueError("harness: %d values for a stored shape %r" % (len(values), inp.stored_shape()))
        elif dtype == "bool":
            values = [self.rng.random() < 0.5 for _ in range(n)]
        elif dtype in FLOATS:
            values = [self.rng.uniform(low, high) for _ in range(n)]
        else:
            values = [self.rng.randint(int(low), int(high)) for _ in range(n)]
        if dtype in FLOATS:
            values = [float(v) for v in values]
        inp.values = values
        return inp

    def case(self, name, inputs, lua, py, grad=False, params=None, atol=None, rtol=None, check_dtype=True, expect_fail=False,
             requires_grad=False):
        c = Case(name, list(inputs), lua, py, grad, params, atol, rtol, check_dtype, False)
        c.requires_grad = requires_grad or grad   # leaves require grad; only grad=True back-propagates
        c.expect_fail = expect_fail     # the harness's own check: a difference it must report
        self.cases.append(c)

    def raises(self, name, inputs, lua, py):
        self.cases.append(Case(name, list(inputs), lua, py, False, None, None, None, True, True))

    def module_case(self, name, inputs, lua, py, lua_body, py_body, params=None, lua_pre="", py_pre="", grad=True, **kw):
        """A module built in both languages (lua, py: its constructor), in float64, loaded with the same
        parameters and buffers (params, strictly: PyTorch's names and shapes), lua_pre / py_pre run
        (m:eval()), its parameters appended to G (registration order, the same in both), then the bodies
        (which return the results; they see m)."""
        self.case(name, inputs, lua=MODULE_LUA % (lua, lua_pre, lua_body), py=MODULE_PY % (py, py_pre, py_body), grad=grad,
                  params=params or {}, **kw)

    # ------------------------------------------------------------------ programs
    def _lua_case(self, i, c):
        lines = ["run(%d, function()" % i, "  local leaves, G, P = {}, {}, {}"]
        for k, inp in enumerate(c.inputs, 1):
            lines.append("  local b%d = %s" % (k, lua_tensor(inp)))
            if c.requires_grad and inp.dtype in FLOATS:
                lines.append("  b%d:requires_grad_(true); leaves[#leaves + 1] = b%d" % (k, k))
            lines.append("  local x%d = %s" % (k, view_code(inp, "b%d" % k, "lua")))
        for pname, inp in sorted(c.params.items()):
            lines.append("  P[%r] = %s" % (pname, lua_tensor(inp)))
            if c.grad and inp.dtype in FLOATS:
                lines.append("  P[%r]:requires_grad_(true); leaves[#leaves + 1] = P[%r]" % (pname, pname))
        args = ", ".join(["x%d" % k for k in range(1, len(c.inputs) + 1)] + ["P", "G"])
        lines.append("  local outs = pack((function(%s)\n%s\n  end)(%s))" % (args, textwrap.indent(c.lua, "    "), args))
        lines.append("  if outs.n == 1 and type(outs[1]) == 'table' and not nnr.is_tensor(outs[1]) then outs = outs[1] end")
        lines.append("  finish(%d, outs, leaves, G, %s)" % (i, "true" if c.grad else "false"))
        lines.append("end)")
        return "\n".join(lines)

    def _py_case(self, i, c):
        lines = ["def _case%d():" % i, "    leaves, G, P = [], [], types.SimpleNamespace()"]
        for k, inp in enumerate(c.inputs, 1):
            lines.append("    b%d = %s" % (k, py_tensor(inp)))
            if c.requires_grad and inp.dtype in FLOATS:
                lines.append("    b%d.requires_grad_(True); leaves.append(b%d)" % (k, k))
            lines.append("    x%d = %s" % (k, view_code(inp, "b%d" % k, "py")))
        for pname, inp in sorted(c.params.items()):
            lines.append("    setattr(P, %r, %s)" % (pname, py_tensor(inp)))
            if c.grad and inp.dtype in FLOATS:
                lines.append("    getattr(P, %r).requires_grad_(True); leaves.append(getattr(P, %r))" % (pname, pname))
        args = ", ".join(["x%d" % k for k in range(1, len(c.inputs) + 1)] + ["P", "G"])
        lines.append("    def body(%s):" % args)
        lines.append(textwrap.indent(c.py, "        "))
        lines.append("    r = body(%s)" % args)
        lines.append("    outs = list(r) if isinstance(r, (tuple, list)) else [r]")
        lines.append("    finish(%d, outs, leaves, G, %s)" % (i, "True" if c.grad else "False"))
        lines.append("run(%d, _case%d)" % (i, i))
        return "\n".join(lines)

    @staticmethod
    def _parse(text):
        res = {}
        for line in text.splitlines():
            parts = line.split(" ", 5) if line.startswith(("V ", "G ")) else line.split(" ", 2)
            if line.startswith(("V ", "G ")):
                tag, case, k = parts[0], int(parts[1]), int(parts[2])
                r = res.setdefault(case, {"V": {}, "G": {}, "E": None, "nograd": False})
                if parts[3] == "nil":
                    r[tag][k] = None
                elif parts[3] == "bad":
                    r[tag][k] = ("bad", parts[4] if len(parts) > 4 else "?")
                else:
                    rest = " ".join(parts[4:]).split(" ", 2)
                    dt, shape = rest[0], rest[1]
                    vals = rest[2].split() if len(rest) > 2 else []
                    r[tag][k] = (parts[3], dt, shape, [float(v) for v in vals])
            elif line.startswith("E "):
                case = int(parts[1])
                res.setdefault(case, {"V": {}, "G": {}, "E": None, "nograd": False})["E"] = parts[2] if len(parts) > 2 else ""
            elif line.startswith("NOGRAD "):
                res.setdefault(int(parts[1]), {"V": {}, "G": {}, "E": None, "nograd": False})["nograd"] = True
        return res

    # ------------------------------------------------------------------ comparison
    def _compare_value(self, c, what, n, t):
        if t is None and n is None:
            return None
        if t is None or n is None:      # a gradient PyTorch leaves at None may be zeros in nnrun and back
            v = n if t is None else t
            if what.startswith("gradient") and v[0] == "t" and all(x == 0 for x in v[3]):
                return None
            return "%s: nnrun gave %s, PyTorch %s" % (what, "nothing" if n is None else "a value", "nothing" if t is None else "a value")
        if n[0] == "bad" or t[0] == "bad":
            return "%s: not a tensor or number (nnrun %s, PyTorch %s)" % (what, n[1] if n[0] == "bad" else n[0], t[1] if t[0] == "bad" else t[0])
        kind_n, dt_n, shape_n, vn = n
        kind_t, dt_t, shape_t, vt = t
        if shape_n != shape_t:
            return "%s: shape %s, PyTorch %s" % (what, shape_n, shape_t)
        if c.check_dtype and dt_n != dt_t and not (kind_n == "n" or kind_t == "n"):
            return "%s: dtype %s, PyTorch %s" % (what, dt_n, dt_t)
        exact = dt_t not in FLOATS
        atol, rtol = TOL.get(dt_n if dt_n in FLOATS else "f64", TOL["f64"])
        if c.atol is not None:
            atol = c.atol
        if c.rtol is not None:
            rtol = c.rtol
        for j, (a, b) in enumerate(zip(vn, vt)):
            if math.isnan(b) or math.isnan(a):
                if not (math.isnan(a) and math.isnan(b)):
                    return "%s: element %d: nnrun %r, PyTorch %r" % (what, j + 1, a, b)
                continue
            if exact or math.isinf(b) or math.isinf(a):
                ok = a == b
            else:
                ok = abs(a - b) <= atol + rtol * abs(b)
            if not ok:
                return "%s: element %d: nnrun %.17g, PyTorch %.17g (atol %g, rtol %g)" % (what, j + 1, a, b, atol, rtol)
        return None

    def _check(self, i, c, rn, rt):
        if c.raises:
            if rn["E"] is None:
                return "nnrun did not raise (PyTorch: %s)" % (rt["E"] or "did not raise either")
            if rt["E"] is None:
                return "PyTorch did not raise; nnrun: %s" % rn["E"]
            return None
        if rn["E"] is not None or rt["E"] is not None:
            return "raised: nnrun %s | PyTorch %s" % (rn["E"] or "-", rt["E"] or "-")
        if len(rn["V"]) != len(rt["V"]):
            return "%d results, PyTorch %d" % (len(rn["V"]), len(rt["V"]))
        for k in sorted(rt["V"]):
            err = self._compare_value(c, "result %d" % k, rn["V"].get(k), rt["V"][k])
            if err:
                return err
        if rn["nograd"] != rt["nograd"]:
            return "gradient: %s output requires grad" % ("no nnrun" if rn["nograd"] else "no PyTorch")
        for k in sorted(set(rt["G"]) | set(rn["G"])):
            err = self._compare_value(c, "gradient of leaf %d" % k, rn["G"].get(k), rt["G"].get(k))
            if err:
                return err
        return None

    def run(self):
        ap = argparse.ArgumentParser(description="nnrun against PyTorch: " + self.name)
        ap.add_argument("--nnrun", default="build/bin/nnrun")
        ap.add_argument("-k", default=None, help="only cases whose name contains this")
        ap.add_argument("-v", action="store_true")
        args = ap.parse_args()
        try:
            import torch  # noqa: F401
        except ImportError:
            print("%s: skipped: import torch failed (PyTorch is Debian's python3-torch, /usr/bin/python3)" % self.name)
            sys.exit(77)
        cases = [(i, c) for i, c in enumerate(self.cases, 1) if not args.k or args.k in c.name]
        with tempfile.TemporaryDirectory() as d:
            lua_path, py_path = os.path.join(d, "cases.lua"), os.path.join(d, "cases.py")
            with open(lua_path, "w") as f:
                f.write(LUA_PRELUDE + "\n" + "\n".join(self._lua_case(i, c) for i, c in cases) + "\n")
            with open(py_path, "w") as f:
                f.write(PY_PRELUDE + "\n" + "\n".join(self._py_case(i, c) for i, c in cases) + "\n")
            pn = subprocess.run([args.nnrun, lua_path], capture_output=True, text=True)
            pt = subprocess.run([sys.executable, py_path], capture_output=True, text=True)
        if pt.returncode != 0:
            print("%s: the PyTorch side failed (exit %d):\n%s" % (self.name, pt.returncode, pt.stderr[-3000:]))
            print("0 passed, %d failed" % len(cases))
            sys.exit(1)
        rn, rt = self._parse(pn.stdout), self._parse(pt.stdout)
        passed = failed = 0
        for i, c in cases:
            empty = {"V": {}, "G": {}, "E": None, "nograd": False}
            if i not in rn:
                err = "nnrun gave no result (exit %d): %s" % (pn.returncode, pn.stderr.strip()[-500:])
            else:
                err = self._check(i, c, rn[i], rt.get(i, empty))
            if c.expect_fail:
                err = None if err else "the harness missed a difference it must report"
            if err:
                failed += 1
                print("FAIL %s: %s" % (c.name, err))
            else:
                passed += 1
                if args.v:
                    detail = (" (nnrun: %s)" % rn[i]["E"]) if c.raises else ""
                    print("ok   %s%s" % (c.name, detail))
        print("%d passed, %d failed" % (passed, failed))
        sys.exit(1 if failed else 0)
