"""The tensor ops composed in Lua (lua/nnr/ops/: tril/triu, norm, logsumexp, lerp, outer,
cosine_similarity, cdist, one_hot, repeat, repeat_interleave, roll, flip, pad, einsum, unfold/fold,
interpolate) against PyTorch: values and gradients on random, strided, transposed and broadcast
inputs, and the errors PyTorch raises for bad arguments."""
import harness

s = harness.Suite("composite_ops")
T, C, S, E = "transposed", "contiguous", "strided", "expanded"

# tril / triu ------------------------------------------------------------------------------------
for k in (0, 1, -1, 5, -5):
    for layout in (C, T):
        x = s.tensor([2, 4, 5], layout=layout)
        s.case("tril(%d) %s" % (k, layout), [x], lua="return x1:tril(%d)" % k, py="return x1.tril(%d)" % k, grad=True)
        s.case("triu(%d) %s" % (k, layout), [x], lua="return x1:triu(%d)" % k, py="return x1.triu(%d)" % k, grad=True)
s.case("tril of i64", [s.tensor([3, 3], dtype="i64", low=-5, high=5)], lua="return x1:tril()", py="return x1.tril()")
s.case("triu of bool", [s.tensor([3, 4], dtype="bool")], lua="return x1:triu()", py="return x1.triu()")
s.raises("tril of a 1-d tensor", [s.tensor([3])], lua="return x1:tril()", py="return x1.tril()")

# norm -------------------------------------------------------------------------------------------
for p_lua, p_py in (("nil", "'fro'"), ("1", "1"), ("2", "2"), ("3", "3"), ("1.5", "1.5"), ("0.5", "0.5"),
                    ("math.huge", "float('inf')"), ("-math.huge", "float('-inf')"), ("'fro'", "'fro'")):
    for layout in (C, T, S):
        x = s.tensor([3, 4], layout=layout)
        s.case("norm(p=%s) %s" % (p_lua, layout), [x], lua="return x1:norm(%s)" % p_lua, py="return x1.norm(%s)" % p_py, grad=True)
    x = s.tensor([2, 3, 4], layout=T)
    s.case("norm(p=%s, dim 2, keepdim)" % p_lua, [x], lua="return x1:norm(%s, 2, true)" % p_lua,
           py="return x1.norm(%s, 1, True)" % p_py, grad=True)
    if p_lua != "'fro'":
        s.case("norm(p=%s, dims {1, -1})" % p_lua, [x], lua="return x1:norm(%s, {1, -1})" % p_lua,
               py="return x1.norm(%s, (0, -1))" % p_py, grad=True)
# gradients at zero: a zero vector has norm 0 and gradient 0 (p = 2, 3), sign(0) = 0 for p = 1
zeros_row = [0.0, 0.0, 0.0, 1.5, -2.0, 0.0]
for p in ("1", "2", "3", "0.5"):
    z = s.tensor([2, 3], values=zeros_row)
    s.case("norm(p=%s) with a zero row, gradient at 0" % p, [z], lua="return x1:norm(%s, 2)" % p, py="return x1.norm(%s, 1)" % p, grad=True)
s.case("norm of inf and nan", [s.tensor([2, 2], values=[float("inf"), 1.0, float("nan"), 2.0])],
       lua="return x1:norm(2, 2)", py="return x1.norm(2, 1)")
s.raises("norm of an integer tensor", [s.tensor([3], dtype="i64")], lua="return x1:norm()", py="return x1.norm()")
s.raises("norm: bad dim", [s.tensor([3, 4])], lua="return x1:norm(2, 3)", py="return x1.norm(2, 2)")

# logsumexp --------------------------------------------------------------------------------------
for layout in (C, T, S):
    x = s.tensor([3, 5], layout=layout, low=-30, high=30)
    s.case("logsumexp dim 2 %s" % layout, [x], lua="return x1:logsumexp(2)", py="return x1.logsumexp(1)", grad=True)
    s.case("logsumexp dim -2 keepdim %s" % layout, [x], lua="return x1:logsumexp(-2, true)", py="return x1.logsumexp(-2, True)", grad=True)
x = s.tensor([2, 3, 4])
s.case("logsumexp dims {1, 3}", [x], lua="return x1:logsumexp({1, 3})", py="return x1.logsumexp((0, 2))", grad=True)
s.case("logsumexp large values (stable)", [s.tensor([2, 3], values=[1000.0, 1001.0, 999.0, -1000.0, -1002.0, -1001.0])],
       lua="return x1:logsumexp(2)", py="return x1.logsumexp(1)", grad=True)
inf = float("inf")
s.case("logsumexp with infinities", [s.tensor([4, 2], values=[-inf, -inf, inf, 1.0, inf, -inf, -inf, 2.0])],
       lua="return x1:logsumexp(2)", py="return x1.logsumexp(1)")
s.raises("logsumexp: bad dim", [s.tensor([3])], lua="return x1:logsumexp(2)", py="return x1.logsumexp(1)")

# lerp, outer ------------------------------------------------------------------------------------
for w in ("0.25", "0.75", "1.5"):
    x, y = s.tensor([3, 4], layout=T), s.tensor([4])
    s.case("lerp weight %s, end broadcast" % w, [x, y], lua="return x1:lerp(x2, %s)" % w, py="return x1.lerp(x2, %s)" % w, grad=True)
x, y, w = s.tensor([2, 3, 4]), s.tensor([3, 4], layout=T), s.tensor([4], low=-0.5, high=1.5)
s.case("lerp tensor weight, broadcast", [x, y, w], lua="return x1:lerp(x2, x3)", py="return x1.lerp(x2, x3)", grad=True)
x, y = s.tensor([3]), s.tensor([4], layout=S)
s.case("outer", [x, y], lua="return nnr.outer(x1, x2)", py="return torch.outer(x1, x2)", grad=True)
s.case("outer of i64", [s.tensor([3], dtype="i64"), s.tensor([2], dtype="i64")], lua="return x1:outer(x2)", py="return x1.outer(x2)")
s.raises("outer of a 2-d tensor", [s.tensor([2, 2]), s.tensor([3])], lua="return nnr.outer(x1, x2)", py="return torch.outer(x1, x2)")

# cosine_similarity ------------------------------------------------------------------------------
x, y = s.tensor([4, 5], layout=T), s.tensor([4, 5])
s.case("cosine_similarity dim 2", [x, y], lua="return F.cosine_similarity(x1, x2)", py="return F.cosine_similarity(x1, x2)", grad=True)
x, y = s.tensor([3, 4, 5]), s.tensor([5], layout=S)
s.case("cosine_similarity broadcast, dim -1", [x, y], lua="return F.cosine_similarity(x1, x2, -1)",
       py="return F.cosine_similarity(x1, x2, -1)", grad=True)
x, y = s.tensor([2, 3], values=[1e-10, -2e-10, 1e-10, 1.0, 2.0, 3.0]), s.tensor([2, 3])
s.case("cosine_similarity of a tiny vector (eps clamps)", [x, y], lua="return F.cosine_similarity(x1, x2, 2, 1e-6)",
       py="return F.cosine_similarity(x1, x2, 1, 1e-6)", grad=True, rtol=1e-6)
s.raises("cosine_similarity: shapes", [s.tensor([3, 4]), s.tensor([3, 5])], lua="return F.cosine_similarity(x1, x2)",
         py="return F.cosine_similarity(x1, x2)")

# cdist ------------------------------------------------------------------------------------------
for p_lua, p_py in (("nil", "2.0"), ("1", "1.0"), ("3", "3.0"), ("math.huge", "float('inf')"), ("0.5", "0.5")):
    x, y = s.tensor([2, 4, 3]), s.tensor([2, 5, 3], layout=T)
    s.case("cdist p=%s" % p_lua, [x, y], lua="return nnr.cdist(x1, x2, %s)" % p_lua, py="return torch.cdist(x1, x2, %s)" % p_py, grad=True)
x, y = s.tensor([30, 3]), s.tensor([2, 6, 3])
s.case("cdist p=2 mm path, broadcast batch", [x, y], lua="return nnr.cdist(x1, x2)", py="return torch.cdist(x1, x2)", grad=True, atol=1e-8)
# equal rows: distance 0, gradient 0 there (both paths)
rows = [0.5, -1.0, 2.0, 1.0, 1.0, 1.0]
x, y = s.tensor([2, 3], values=rows), s.tensor([2, 3], values=rows[::-1][3:] + rows[:3])
s.case("cdist p=2 with a zero distance (direct path)", [x, y], lua="return nnr.cdist(x1, x2)", py="return torch.cdist(x1, x2)", grad=True)
s.case("cdist p=2 with a zero distance (mm path)", [x, y], lua="return nnr.cdist(x1, x2, 2, 'use_mm_for_euclid_dist')",
       py="return torch.cdist(x1, x2, 2.0, 'use_mm_for_euclid_dist')", grad=True, atol=1e-7)
x, y = s.tensor([2, 2], values=[0.0, 0.0, 0.5, 0.5]), s.tensor([2, 2], values=[1.0, -1.0, 0.5, 2.0])
s.case("cdist p=inf with ties (each gets the full gradient)", [x, y], lua="return nnr.cdist(x1, x2, math.huge)",
       py="return torch.cdist(x1, x2, float('inf'))", grad=True)
s.raises("cdist: column mismatch", [s.tensor([3, 4]), s.tensor([3, 5])], lua="return nnr.cdist(x1, x2)", py="return torch.cdist(x1, x2)")
s.raises("cdist: negative p", [s.tensor([3, 4]), s.tensor([3, 4])], lua="return nnr.cdist(x1, x2, -1)", py="return torch.cdist(x1, x2, -1.0)")
s.raises("cdist: 1-d input", [s.tensor([3]), s.tensor([3])], lua="return nnr.cdist(x1, x2)", py="return torch.cdist(x1, x2)")

# one_hot ----------------------------------------------------------------------------------------
i = s.tensor([2, 5], dtype="i64", low=1, high=4)
s.case("one_hot, inferred classes", [i], lua="return nnr.one_hot(x1)", py="return F.one_hot(x1 - 1)")
s.case("one_hot, 6 classes", [i], lua="return x1:one_hot(6)", py="return F.one_hot(x1 - 1, 6)")
s.raises("one_hot: index 0", [s.tensor([3], dtype="i64", values=[1, 0, 2])], lua="return nnr.one_hot(x1, 3)", py="return F.one_hot(x1 - 2, 3)")
s.raises("one_hot: index above num_classes", [s.tensor([3], dtype="i64", values=[1, 4, 2])], lua="return nnr.one_hot(x1, 3)",
         py="return F.one_hot(x1 - 1, 3)")

# repeat, tile, repeat_interleave ----------------------------------------------------------------
x = s.tensor([2, 3], layout=T)
for reps in ((2, 3), (1, 1), (2, 1, 2), (0, 2)):
    r = ", ".join(map(str, reps))
    s.case("repeat(%s)" % r, [x], lua="return x1:repeat_tensor(%s)" % r, py="return x1.repeat(%s)" % r, grad=True)
s.case("repeat via ['repeat']", [x], lua="return x1['repeat'](x1, {3, 1})", py="return x1.repeat(3, 1)", grad=True)
s.case("tile(2)", [x], lua="return x1:tile(2)", py="return x1.tile((2,))", grad=True)
s.raises("repeat: too few counts", [x], lua="return x1:repeat_tensor(2)", py="return x1.repeat(2)")
for dim in ("nil", "1", "2", "-1"):
    s.case("repeat_interleave(3, %s)" % dim, [x], lua="return x1:repeat_interleave(3, %s)" % dim,
           py="return x1.repeat_interleave(3, %s)" % ("None" if dim == "nil" else int(dim) - 1 if int(dim) > 0 else dim), grad=True)
r = s.tensor([3], dtype="i64", values=[2, 0, 3])
s.case("repeat_interleave(tensor, 2)", [x, r], lua="return x1:repeat_interleave(x3, 2)".replace("x3", "x2"),
       py="return x1.repeat_interleave(x2, 1)", grad=True)
s.case("repeat_interleave(counts)", [r], lua="return nnr.repeat_interleave(x1)", py="return torch.repeat_interleave(x1) + 1")
s.raises("repeat_interleave: wrong count length", [x, s.tensor([2], dtype="i64", values=[1, 1])],
         lua="return x1:repeat_interleave(x2, 2)", py="return x1.repeat_interleave(x2, 1)")

# roll, flip -------------------------------------------------------------------------------------
x = s.tensor([3, 4, 5], layout=T)
for shifts, dims, pshifts, pdims in (("1", "1", "1", "0"), ("-2", "3", "-2", "2"), ("{1, 7}", "{2, 3}", "(1, 7)", "(1, 2)"),
                                     ("5", "nil", "5", "None"), ("0", "2", "0", "1")):
    s.case("roll(%s, %s)" % (shifts, dims), [x], lua="return x1:roll(%s, %s)" % (shifts, dims),
           py="return x1.roll(%s, %s)" % (pshifts, pdims), grad=True)
for dims, pdims in (("1", "(0,)"), ("{1, 3}", "(0, 2)"), ("-1", "(-1,)"), ("{}", "()")):
    s.case("flip(%s)" % dims, [x], lua="return x1:flip(%s)" % dims, py="return x1.flip(%s)" % pdims, grad=True)
s.raises("flip: repeated dim", [x], lua="return x1:flip({1, 1})", py="return x1.flip((0, 0))")
s.raises("roll: shifts and dims differ in length", [x], lua="return x1:roll({1, 2}, 1)", py="return x1.roll((1, 2), 0)")

# pad --------------------------------------------------------------------------------------------
x = s.tensor([2, 3, 4, 5], layout=T)
for pad in ((1, 2), (1, 2, 0, 3), (2, 0, 1, 1, 1, 0), (-1, 2), (-1, -2, 1, -1)):
    p = ", ".join(map(str, pad))
    s.case("pad constant {%s}" % p, [x], lua="return F.pad(x1, {%s})" % p, py="return F.pad(x1, (%s,))" % p, grad=True)
s.case("pad constant with value -inf", [x], lua="return F.pad(x1, {1, 1}, 'constant', -math.huge)",
       py="return F.pad(x1, (1, 1), 'constant', float('-inf'))", grad=True)
for mode in ("reflect", "replicate", "circular"):
    for pad in ((1, 3, 2, 0), (0, 0, 1, 1)):
        p = ", ".join(map(str, pad))
        s.case("pad %s {%s}" % (mode, p), [x], lua="return F.pad(x1, {%s}, '%s')" % (p, mode), py="return F.pad(x1, (%s,), '%s')" % (p, mode),
               grad=True)
    y = s.tensor([2, 3, 5], layout=S)
    s.case("pad %s 3-d" % mode, [y], lua="return F.pad(x1, {3, 2}, '%s')" % mode, py="return F.pad(x1, (3, 2), '%s')" % mode, grad=True)
s.raises("pad reflect: 2 values for a 4-d input", [x], lua="return F.pad(x1, {2, 1}, 'reflect')", py="return F.pad(x1, (2, 1), 'reflect')")
s.raises("pad reflect larger than the input", [x], lua="return F.pad(x1, {5, 0}, 'reflect')", py="return F.pad(x1, (5, 0), 'reflect')")
s.raises("pad reflect with a value", [x], lua="return F.pad(x1, {1, 0}, 'reflect', 1)", py="return F.pad(x1, (1, 0), 'reflect', 1.0)")
s.raises("pad odd length", [x], lua="return F.pad(x1, {1, 0, 1})", py="return F.pad(x1, (1, 0, 1))")
s.raises("pad unknown mode", [x], lua="return F.pad(x1, {1, 0}, 'mirror')", py="return F.pad(x1, (1, 0), 'mirror')")

# einsum -----------------------------------------------------------------------------------------
EINSUM = [
    ("ij,jk->ik", [[3, 4], [4, 5]], [T, C]),
    ("bij,bjk->bik", [[2, 3, 4], [2, 4, 5]], [C, T]),
    ("bhqd,bhkd->bhqk", [[2, 3, 4, 5], [2, 3, 6, 5]], [C, C]),
    ("bhqk,bhkd->bhqd", [[2, 3, 4, 6], [2, 3, 6, 5]], [T, C]),
    ("i,i->", [[5], [5]], [S, C]),
    ("i,j->ij", [[3], [4]], [C, C]),
    ("ii->i", [[4, 4]], [T]),
    ("ii", [[4, 4]], [C]),
    ("iji->j", [[3, 2, 3]], [C]),
    ("ij->ji", [[3, 4]], [T]),
    ("ij->", [[3, 4]], [C]),
    ("ijk->", [[2, 3, 4]], [S]),
    ("ij,ij->ij", [[3, 4], [3, 4]], [C, T]),
    ("ij,jk", [[3, 4], [4, 5]], [C, C]),
    ("ba,ca", [[3, 4], [5, 4]], [C, C]),
    ("...ij,...jk->...ik", [[2, 3, 4], [4, 5]], [C, C]),
    ("...ij,...jk", [[2, 1, 3, 4], [3, 4, 2]], [C, C]),
    ("b...d,bd->b...", [[2, 3, 4, 5], [2, 5]], [C, C]),
    ("...ij->ij", [[2, 3, 4]], [C]),
    ("ij,jk,kl->il", [[2, 3], [3, 4], [4, 5]], [C, T, C]),
    ("ij,ij,ij->i", [[3, 4], [3, 4], [3, 4]], [C, C, S]),
    ("bn,anm,bm->ba", [[2, 3], [4, 3, 5], [2, 5]], [C, C, C]),
    ("ij,jk->ik", [[1, 4], [4, 5]], [C, C]),
    ("ij,ij->ij", [[1, 4], [3, 1]], [C, C]),
    ("i,i->i", [[1], [4]], [C, C]),
    ("ij,jk->ik", [[3, 1], [4, 5]], [C, C]),
    (" i j , j k -> i k ", [[3, 4], [4, 5]], [C, C]),
    ("ABc,cD->ABD", [[2, 3, 4], [4, 2]], [C, C]),
    ("ij,jk->", [[3, 4], [4, 5]], [T, C]),
    ("bii->b", [[2, 3, 3]], [C]),
    ("abc,cba->ab", [[2, 3, 4], [4, 3, 2]], [C, T]),
    ("ibj,jbk->kib", [[3, 2, 4], [4, 2, 5]], [C, C]),
    ("bi,bj,bk->bijk", [[2, 3], [2, 4], [2, 2]], [C, T, C]),
    ("bij,bjk->bik", [[1, 3, 4], [2, 4, 5]], [C, C]),
    ("i,->i", [[3], []], [C, C]),
    ("...,...->...", [[2, 3], [3]], [C, C]),
    ("i...->...", [[3, 2, 2]], [C]),
    ("aab,bc->ac", [[3, 3, 4], [4, 2]], [C, C]),
]
for eq, shapes, layouts in EINSUM:
    xs = [s.tensor(sh, layout=(lay if len(sh) >= 2 or lay == S else C)) for sh, lay in zip(shapes, layouts)]
    args = ", ".join("x%d" % (k + 1) for k in range(len(xs)))
    s.case("einsum '%s'" % eq, xs, lua="return nnr.einsum('%s', %s)" % (eq, args), py="return torch.einsum('%s', %s)" % (eq, args), grad=True)
x, y = s.tensor([3, 4]), s.tensor([4, 5])
s.case("einsum with a list of operands", [x, y], lua="return nnr.einsum('ij,jk->ik', {x1, x2})", py="return torch.einsum('ij,jk->ik', [x1, x2])", grad=True)
s.raises("einsum: rank mismatch", [x, y], lua="return nnr.einsum('ijk,jk->ik', x1, x2)", py="return torch.einsum('ijk,jk->ik', x1, x2)")
s.raises("einsum: unknown output subscript", [x, y], lua="return nnr.einsum('ij,jk->iz', x1, x2)", py="return torch.einsum('ij,jk->iz', x1, x2)")
s.raises("einsum: repeated output subscript", [x, y], lua="return nnr.einsum('ij,jk->iik', x1, x2)", py="return torch.einsum('ij,jk->iik', x1, x2)")
s.raises("einsum: bad character", [x, y], lua="return nnr.einsum('i$,jk', x1, x2)", py="return torch.einsum('i$,jk', x1, x2)")
s.raises("einsum: too many terms", [x, y], lua="return nnr.einsum('ij,jk,kl->il', x1, x2)", py="return torch.einsum('ij,jk,kl->il', x1, x2)")
s.raises("einsum: size mismatch", [x, s.tensor([3, 5])], lua="return nnr.einsum('ij,jk->ik', x1, x2)", py="return torch.einsum('ij,jk->ik', x1, x2)")
s.raises("einsum: diagonal of unequal sizes", [x], lua="return nnr.einsum('ii->i', x1)", py="return torch.einsum('ii->i', x1)")

# unfold / fold ----------------------------------------------------------------------------------
x = s.tensor([2, 3, 6, 7], layout=T)
for k, rest_lua, rest_py in (("2", "", ""), ("{2, 3}", ", 1, 1, {2, 1}", ", 1, 1, (2, 1)"), ("3", ", 2, {1, 0}, 2", ", 2, (1, 0), 2"),
                             ("{3, 2}", ", {padding = 2, stride = 3}", ", padding=2, stride=3")):
    kp = k.replace("{", "(").replace("}", ")")
    s.case("unfold k=%s%s" % (k, rest_lua), [x], lua="return F.unfold(x1, %s%s)" % (k, rest_lua), py="return F.unfold(x1, %s%s)" % (kp, rest_py), grad=True)
for L, k, rest_lua, rest_py, out in ((30, "2", "", "", "(6, 7)"), (16, "{2, 3}", ", 1, 1, {2, 2}", ", 1, 1, (2, 2)", "(6, 7)"),
                                     (4, "3", ", 1, 0, 2", ", 1, 0, 2", "(5, 6)")):
    kh, kw = (2, 3) if k == "{2, 3}" else (int(k), int(k))
    cols = s.tensor([2, 3 * kh * kw, L], layout=T)
    kp = k.replace("{", "(").replace("}", ")")
    s.case("fold k=%s%s" % (k, rest_lua), [cols], lua="return F.fold(x1, {%s}, %s%s)" % (out[1:-1], k, rest_lua),
           py="return F.fold(x1, %s, %s%s)" % (out, kp, rest_py), grad=True)
s.raises("unfold: kernel larger than the image", [x], lua="return F.unfold(x1, 8)", py="return F.unfold(x1, 8)")
s.raises("fold: wrong number of blocks", [s.tensor([1, 12, 5])], lua="return F.fold(x1, {4, 4}, 2)", py="return F.fold(x1, (4, 4), 2)")

# interpolate ------------------------------------------------------------------------------------
x4, x3 = s.tensor([2, 3, 5, 4], layout=T), s.tensor([2, 3, 5], layout=S)
INTERP = [
    (x3, "{size = 8}", "size=8"),
    (x3, "{size = 3}", "size=3"),
    (x3, "{scale_factor = 2.5}", "scale_factor=2.5"),
    (x3, "{scale_factor = 1.7, recompute_scale_factor = true}", "scale_factor=1.7, recompute_scale_factor=True"),
    (x3, "{size = 9, mode = 'linear'}", "size=9, mode='linear'"),
    (x3, "{size = 9, mode = 'linear', align_corners = true}", "size=9, mode='linear', align_corners=True"),
    (x3, "{size = 2, mode = 'linear'}", "size=2, mode='linear'"),
    (x3, "{scale_factor = 0.6, mode = 'linear'}", "scale_factor=0.6, mode='linear'"),
    (x4, "{size = {7, 9}}", "size=(7, 9)"),
    (x4, "{size = {3, 2}}", "size=(3, 2)"),
    (x4, "{scale_factor = 2}", "scale_factor=2"),
    (x4, "{scale_factor = {1.5, 0.75}}", "scale_factor=(1.5, 0.75)"),
    (x4, "{size = {7, 9}, mode = 'bilinear'}", "size=(7, 9), mode='bilinear'"),
    (x4, "{size = {7, 9}, mode = 'bilinear', align_corners = true}", "size=(7, 9), mode='bilinear', align_corners=True"),
    (x4, "{size = {3, 3}, mode = 'bilinear', align_corners = false}", "size=(3, 3), mode='bilinear', align_corners=False"),
    (x4, "{scale_factor = 1.5, mode = 'bilinear'}", "scale_factor=1.5, mode='bilinear'"),
    (x4, "{size = {1, 1}, mode = 'bilinear', align_corners = true}", "size=(1, 1), mode='bilinear', align_corners=True"),
    (x3, "{size = 8, mode = 'nearest-exact'}", "size=8, mode='nearest-exact'"),
    (x3, "{size = 3, mode = 'nearest-exact'}", "size=3, mode='nearest-exact'"),
    (x4, "{scale_factor = {1.5, 0.75}, mode = 'nearest-exact'}", "scale_factor=(1.5, 0.75), mode='nearest-exact'"),
    (x3, "{size = 3, mode = 'area'}", "size=3, mode='area'"),
    (x4, "{size = {2, 3}, mode = 'area'}", "size=(2, 3), mode='area'"),
    (x4, "{scale_factor = 0.5, mode = 'area'}", "scale_factor=0.5, mode='area'"),
]
for x, lo, po in INTERP:
    s.case("interpolate %dd %s" % (len(x.shape), lo), [x], lua="return F.interpolate(x1, %s)" % lo, py="return F.interpolate(x1, %s)" % po, grad=True)
s.raises("interpolate: bilinear on 3-d", [x3], lua="return F.interpolate(x1, {size = 4, mode = 'bilinear'})",
         py="return F.interpolate(x1, size=4, mode='bilinear')")
s.raises("interpolate: align_corners with nearest", [x4], lua="return F.interpolate(x1, {size = 4, align_corners = true})",
         py="return F.interpolate(x1, size=4, align_corners=True)")
s.raises("interpolate: size and scale_factor", [x4], lua="return F.interpolate(x1, {size = 4, scale_factor = 2})",
         py="return F.interpolate(x1, size=4, scale_factor=2)")
s.raises("interpolate: neither size nor scale_factor", [x4], lua="return F.interpolate(x1, {mode = 'nearest'})",
         py="return F.interpolate(x1, mode='nearest')")

# f32 and expanded (zero-stride) inputs ----------------------------------------------------------
x = s.tensor([3, 4, 5], layout=E)
s.case("tril of an expanded input", [x], lua="return x1:tril()", py="return x1.tril()", grad=True)
s.case("roll of an expanded input", [x], lua="return x1:roll(2, 1)", py="return x1.roll(2, 0)", grad=True)
s.case("flip of an expanded input", [x], lua="return x1:flip(1, 3)", py="return x1.flip((0, 2))", grad=True)
s.case("pad reflect of an expanded input", [x], lua="return F.pad(x1, {2, 2, 1, 1}, 'reflect')", py="return F.pad(x1, (2, 2, 1, 1), 'reflect')", grad=True)
s.case("norm of an expanded input", [x], lua="return x1:norm(3, {1, 2})", py="return x1.norm(3, (0, 1))", grad=True)
s.case("repeat of an expanded input", [x], lua="return x1:repeat_tensor(1, 2, 1)", py="return x1.repeat(1, 2, 1)", grad=True)
x, y = s.tensor([2, 2, 40, 16], dtype="f32"), s.tensor([2, 2, 30, 16], dtype="f32", layout=T)
s.case("einsum bhqd,bhkd->bhqk f32", [x, y], lua="return nnr.einsum('bhqd,bhkd->bhqk', x1, x2)",
       py="return torch.einsum('bhqd,bhkd->bhqk', x1, x2)", grad=True, atol=1e-4, rtol=1e-4)
s.case("logsumexp f32", [s.tensor([4, 6], dtype="f32", low=-50, high=50)], lua="return x1:logsumexp(2)", py="return x1.logsumexp(1)", grad=True)
x, y = s.tensor([40, 8], dtype="f32"), s.tensor([30, 8], dtype="f32")
s.case("cdist f32 mm path", [x, y], lua="return nnr.cdist(x1, x2)", py="return torch.cdist(x1, x2)", grad=True, atol=1e-3, rtol=1e-3)
s.case("interpolate f32 bilinear", [s.tensor([1, 2, 6, 5], dtype="f32", layout=E)],
       lua="return F.interpolate(x1, {size = {9, 4}, mode = 'bilinear'})", py="return F.interpolate(x1, size=(9, 4), mode='bilinear')", grad=True)
s.case("interpolate f32 nearest, 13 -> 29", [s.tensor([1, 2, 13], dtype="f32")],
       lua="return F.interpolate(x1, {size = 29})", py="return F.interpolate(x1, size=29)", grad=True)
s.case("interpolate nearest scale 0.37", [s.tensor([1, 2, 50], dtype="f32")],
       lua="return F.interpolate(x1, {scale_factor = 0.37})", py="return F.interpolate(x1, scale_factor=0.37)", grad=True)
s.case("unfold f32 of an expanded input", [s.tensor([2, 2, 5, 5], dtype="f32", layout=E)],
       lua="return F.unfold(x1, 3, 1, 1)", py="return F.unfold(x1, 3, 1, 1)", grad=True)

# integer and bool inputs keep their dtype -------------------------------------------------------
for dt in ("i64", "i32", "bool"):
    x = s.tensor([3, 4], dtype=dt, layout=T, low=-5, high=5)
    s.case("roll %s" % dt, [x], lua="return x1:roll(1, 2)", py="return x1.roll(1, 1)")
    s.case("flip %s" % dt, [x], lua="return x1:flip(1)", py="return x1.flip(0)")
    s.case("repeat %s" % dt, [x], lua="return x1:repeat_tensor(2, 1)", py="return x1.repeat(2, 1)")
    s.case("repeat_interleave %s" % dt, [x], lua="return x1:repeat_interleave(2, 2)", py="return x1.repeat_interleave(2, 1)")
    s.case("pad constant %s" % dt, [x], lua="return F.pad(x1, {1, 1})", py="return F.pad(x1, (1, 1))")
    s.case("triu %s" % dt, [x], lua="return x1:triu(1)", py="return x1.triu(1)")
    s.case("einsum transpose %s" % dt, [x], lua="return nnr.einsum('ij->ji', x1)", py="return torch.einsum('ij->ji', x1)")

s.run()
