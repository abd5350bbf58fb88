-- Image ops composed from index_select, index_add and arithmetic: unfold (im2col) and its adjoint
-- fold, and interpolate (nearest, linear, bilinear). Differentiable through the ops they use.
local ffi = require "ffi"
local T = require "nnr.tensor"
local V = require "nnr.check"
local U = require "nnr.ops.util"
local binding = require "nnr.binding"
local C, call = binding.C, binding.call
local pad = require("nnr.ops.shape").functional.pad
local shape_str = U.shape_str
local type, floor = type, math.floor

local M = { methods = {}, functions = {}, functional = {} }
local F = M.functional

local function shape(t) return shape_str(t:size()) end

-- the window arguments after kernel_size: dilation, padding, stride positionally (PyTorch's order)
-- or as one options table {dilation=, padding=, stride=}
local window_keys = { dilation = true, padding = true, stride = true }
local function window(op, a, b, c)
  if type(a) == "table" and not U.is_tensor(a) and a[1] == nil then
    if b ~= nil or c ~= nil then error(op .. ": give dilation, padding and stride either positionally or in one options table, not both", 0) end
    V.options(op, a, window_keys)
    a, b, c = a.dilation, a.padding, a.stride
  end
  local dh, dw = U.pair(op, "dilation", a == nil and 1 or a, 1)
  local ph, pw = U.pair(op, "padding", b == nil and 0 or b, 0)
  local sh, sw = U.pair(op, "stride", c == nil and 1 or c, 1)
  return dh, dw, ph, pw, sh, sw
end

local function blocks(op, H, W, kh, kw, dh, dw, ph, pw, sh, sw, x)
  local oh = floor((H + 2 * ph - dh * (kh - 1) - 1) / sh) + 1
  local ow = floor((W + 2 * pw - dw * (kw - 1) - 1) / sw) + 1
  if oh < 1 or ow < 1 then
    error(string.format("%s: a %dx%d kernel (dilation %d, %d) does not fit the padded %dx%d image (%s; padding %d, %d)", op, kh, kw, dh, dw,
      H + 2 * ph, W + 2 * pw, x and ("input of shape " .. shape(x)) or ("output_size " .. H .. "x" .. W), ph, pw), 0)
  end
  return oh, ow
end

-- 1-based positions in the flattened padded image [Hp * Wp] of every (kernel position, block):
-- kernel positions outer, blocks inner, as the rows and columns of unfold's result
local function patch_index(kh, kw, dh, dw, sh, sw, oh, ow, Wp, device)
  local i64 = { dtype = "i64", device = device }
  local base = (T.arange(oh, i64) * (sh * Wp)):view(oh, 1) + (T.arange(ow, i64) * sw):view(1, ow)
  local koff = (T.arange(kh, i64) * (dh * Wp)):view(kh, 1) + (T.arange(kw, i64) * dw):view(1, kw)
  return (koff:view(kh * kw, 1) + base:view(1, oh * ow)):reshape(-1) + 1
end

-- nnr.nn.functional.unfold(x, kernel_size, dilation = 1, padding = 0, stride = 1): the sliding
-- blocks of x [N, C, H, W] (or [C, H, W]) as columns, [N, C * kh * kw, L] (L blocks)
function F.unfold(x, kernel_size, a, b, c)
  local op = "unfold"
  U.tensor(op, x, "input")
  local nd = x:dim()
  if nd ~= 3 and nd ~= 4 then error(op .. ": expected a 3-d [C, H, W] or 4-d [N, C, H, W] input, got shape " .. shape(x), 0) end
  local kh, kw = U.pair(op, "kernel_size", kernel_size, 1)
  local dh, dw, ph, pw, sh, sw = window(op, a, b, c)
  local xb = nd == 3 and x:unsqueeze(1) or x
  local s = xb:size()
  local N, C, H, W = s[1], s[2], s[3], s[4]
  local oh, ow = blocks(op, H, W, kh, kw, dh, dw, ph, pw, sh, sw, x)
  if ph > 0 or pw > 0 then xb = pad(xb, { pw, pw, ph, ph }) end
  local Hp, Wp = H + 2 * ph, W + 2 * pw
  local idx = patch_index(kh, kw, dh, dw, sh, sw, oh, ow, Wp, x.device)
  local cols = xb:reshape(N, C, Hp * Wp):index_select(3, idx):view(N, C * kh * kw, oh * ow)
  return nd == 3 and cols:squeeze(1) or cols
end

-- nnr.nn.functional.fold(x, output_size, kernel_size, dilation = 1, padding = 0, stride = 1): the
-- adjoint of unfold: columns [N, C * kh * kw, L] (or [C * kh * kw, L]) summed back into an image
-- [N, C, H, W], overlapping blocks adding up
function F.fold(x, output_size, kernel_size, a, b, c)
  local op = "fold"
  U.tensor(op, x, "input")
  local nd = x:dim()
  if nd ~= 2 and nd ~= 3 then error(op .. ": expected a 2-d [C*kh*kw, L] or 3-d [N, C*kh*kw, L] input, got shape " .. shape(x), 0) end
  local H, W = U.pair(op, "output_size", output_size, 1)
  local kh, kw = U.pair(op, "kernel_size", kernel_size, 1)
  local dh, dw, ph, pw, sh, sw = window(op, a, b, c)
  local xb = nd == 2 and x:unsqueeze(1) or x
  local s = xb:size()
  local N, CK, L = s[1], s[2], s[3]
  if CK % (kh * kw) ~= 0 then
    error(op .. ": dimension " .. (nd - 1) .. " of the input of shape " .. shape(x) .. " must be divisible by kh * kw = " .. kh * kw, 0)
  end
  local oh, ow = blocks(op, H, W, kh, kw, dh, dw, ph, pw, sh, sw)
  if oh * ow ~= L then
    error(string.format("%s: the input of shape %s has %d blocks, but output_size %dx%d with a %dx%d kernel (dilation %d, %d; padding %d, %d; stride %d, %d) gives %dx%d = %d",
      op, shape(x), L, H, W, kh, kw, dh, dw, ph, pw, sh, sw, oh, ow, oh * ow), 0)
  end
  local C = CK / (kh * kw)
  local Hp, Wp = H + 2 * ph, W + 2 * pw
  local idx = patch_index(kh, kw, dh, dw, sh, sw, oh, ow, Wp, x.device)
  local img = T.zeros(N, C, Hp * Wp, { dtype = x.dtype, device = x.device })
  img = img:index_add(3, idx, xb:reshape(N, C, kh * kw * L)):view(N, C, Hp, Wp)
  if ph > 0 or pw > 0 then img = img:narrow(3, ph + 1, H):narrow(4, pw + 1, W) end
  return nd == 2 and img:squeeze(1) or img
end

-- interpolate ---------------------------------------------------------------------------------
local f32 = ffi.new("float[1]")
local function float32(v) f32[0] = v; return f32[0] end

-- nearest: PyTorch's rule, in float32 as its kernels compute it: floor(o * scale), with the sizes'
-- ratio as scale unless a scale factor was given (an f32 tensor times an f32-exact scale rounds as
-- float32 multiplication does; the cast to i64 truncates, which is floor for these >= 0 values).
-- Returns 1-based i64 indices.
local function nearest_index(n_in, n_out, sf, device)
  if n_out == 2 * n_in then   -- o // 2: each source position twice
    return T.arange(1, n_in + 1, { dtype = "i64", device = device }):unsqueeze(2):expand(n_in, 2):reshape(n_out)
  end
  local o = T.arange(n_out, { dtype = "i64", device = device })
  if n_out == n_in then return o + 1 end
  local scale = float32(sf and 1 / sf or n_in / n_out)
  return (o:float() * scale):long():clamp(nil, n_in - 1) + 1
end

-- nearest-exact: floor((o + 0.5) * scale), the pixel centres' rule (PyTorch's "nearest-exact")
local function nearest_exact_index(n_in, n_out, sf, device)
  local scale = float32(sf and 1 / sf or n_in / n_out)
  return ((T.arange(n_out, { dtype = "f32", device = device }) + 0.5) * scale):long():clamp(nil, n_in - 1) + 1
end

-- linear: for each output position the two 1-based source positions and the weight of the second
local function linear_weights(n_in, n_out, sf, align_corners, dtype, device)
  local o = T.arange(n_out, { dtype = "f64", device = device })
  local src
  if align_corners then
    src = o * (n_out > 1 and (n_in - 1) / (n_out - 1) or 0)
  else
    src = ((o + 0.5) * (sf and 1 / sf or n_in / n_out) - 0.5):clamp(0)
  end
  local i0 = src:long():clamp(nil, n_in - 1)
  local i1 = (i0 + 1):clamp(nil, n_in - 1)
  local w1 = (src - i0:double()):clamp(0, 1)
  return i0 + 1, i1 + 1, w1:to(dtype)
end

local interpolate_keys = { size = true, scale_factor = true, mode = true, align_corners = true, recompute_scale_factor = true }

-- per spatial dim: a list of n values from a number or a table
local function per_dim(op, name, v, n)
  if type(v) == "number" then
    local t = {}
    for i = 1, n do t[i] = v end
    return t
  end
  if type(v) == "table" and not U.is_tensor(v) and #v == n then return v end
  error(op .. ": " .. name .. " must be a number or a table of " .. n .. " (one per spatial dimension), got " ..
    (type(v) == "table" and #v .. " values" or type(v)), 0)
end

-- nnr.nn.functional.interpolate(x, {size= | scale_factor=, mode = "nearest", align_corners=,
-- recompute_scale_factor=}): x [N, C, W] ("nearest", "nearest-exact", "linear", "area") or
-- [N, C, H, W] ("nearest", "nearest-exact", "bilinear", "area") resized over its spatial dims
function F.interpolate(x, opts)
  local op = "interpolate"
  U.tensor(op, x, "input")
  if opts == nil then error(op .. ": give the output size or the scale: interpolate(x, {size = ...} or {scale_factor = ...})", 0) end
  V.options(op, opts, interpolate_keys)
  local mode = V.choice(op, "mode", opts.mode or "nearest", { "nearest", "nearest-exact", "linear", "bilinear", "area" })
  local nd = x:dim()
  if nd ~= 3 and nd ~= 4 then error(op .. ": expected a 3-d [N, C, W] or 4-d [N, C, H, W] input, got shape " .. shape(x), 0) end
  if mode == "linear" and nd ~= 3 then error(op .. ": mode 'linear' needs a 3-d input [N, C, W], got shape " .. shape(x) .. " (use 'bilinear' for 4-d)", 0) end
  if mode == "bilinear" and nd ~= 4 then error(op .. ": mode 'bilinear' needs a 4-d input [N, C, H, W], got shape " .. shape(x) .. " (use 'linear' for 3-d)", 0) end
  U.floating(op, x)
  local align = opts.align_corners
  if mode ~= "linear" and mode ~= "bilinear" and align ~= nil then
    error(op .. ": align_corners can only be set with the interpolating modes 'linear' and 'bilinear', not '" .. mode .. "'", 0)
  end
  align = V.boolean(op, "align_corners", align)
  local recompute = V.boolean(op, "recompute_scale_factor", opts.recompute_scale_factor)
  if (opts.size == nil) == (opts.scale_factor == nil) then
    error(op .. ": give exactly one of size and scale_factor", 0)
  end
  local ns = nd - 2
  local s = x:size()
  local out, scales = {}, {}
  if opts.size ~= nil then
    if recompute then error(op .. ": recompute_scale_factor goes with scale_factor, not size", 0) end
    local sz = per_dim(op, "size", opts.size, ns)
    for k = 1, ns do out[k] = V.integer(op, "size[" .. k .. "]", sz[k], 1) end
  else
    local sf = per_dim(op, "scale_factor", opts.scale_factor, ns)
    for k = 1, ns do
      V.number(op, "scale_factor[" .. k .. "]", sf[k], { above = 0 })
      out[k] = floor(s[k + 2] * sf[k])
      if out[k] > 2 ^ 53 then
        error(op .. ": scale_factor " .. V.show(sf[k]) .. " turns dimension " .. (k + 2) .. " of size " .. s[k + 2] .. " into more elements than any memory holds", 0)
      end
      if out[k] < 1 then
        error(op .. ": scale_factor " .. V.show(sf[k]) .. " turns dimension " .. (k + 2) .. " of size " .. s[k + 2] .. " into " .. out[k] .. " (must be >= 1)", 0)
      end
      if not recompute then scales[k] = sf[k] end
    end
  end
  if mode == "area" then        -- adaptive average pooling to the output size, as PyTorch
    local x4 = nd == 3 and x:unsqueeze(4) or x
    local y = call(C.nnr_adaptive_avg_pool2d, x4.p, out[1], nd == 3 and 1 or out[2])
    return nd == 3 and y:squeeze(4) or y
  end
  local y = x
  for k = 1, ns do
    local d, n_in, n_out = k + 2, s[k + 2], out[k]
    if mode == "nearest" then
      if n_in ~= n_out then y = y:index_select(d, nearest_index(n_in, n_out, scales[k], x.device)) end
    elseif mode == "nearest-exact" then
      if n_in ~= n_out then y = y:index_select(d, nearest_exact_index(n_in, n_out, scales[k], x.device)) end
    else
      local i0, i1, w1 = linear_weights(n_in, n_out, scales[k], align, x.dtype, x.device)
      local shp = { n_out }
      for _ = d + 1, nd do shp[#shp + 1] = 1 end
      local a, b = y:index_select(d, i0), y:index_select(d, i1)
      y = a + (b - a) * w1:view(shp)
    end
  end
  if y == x then y = x:clone() end
  return y
end

return M
