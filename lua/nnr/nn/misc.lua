-- Dropout, Dropout2d, Flatten, Identity, Embedding, Upsample, PixelShuffle / PixelUnshuffle, PReLU and
-- the activations.
local nnr = require "nnr"
local Module = require "nnr.nn.module"
local V = require "nnr.check"
local F = require "nnr.nn.functional"

local M = {}

local Dropout = Module:extend("Dropout")
M.Dropout = Dropout
function Dropout:__init(p)
  Module.__init(self)
  self.p = V.probability("Dropout", "p", p == nil and 0.5 or p)
end
function Dropout:forward(x) return F.dropout(x, self.p, self.training) end
function Dropout:extra_repr() return "p=" .. self.p end

local Flatten = Module:extend("Flatten")
M.Flatten = Flatten
function Flatten:__init(start_dim, end_dim)
  Module.__init(self)
  self.start_dim = V.integer("Flatten", "start_dim", start_dim or 2, -8, 8)
  self.end_dim = V.integer("Flatten", "end_dim", end_dim or -1, -8, 8)
end
function Flatten:forward(x) return x:flatten(self.start_dim, self.end_dim) end

local Embedding = Module:extend("Embedding")
M.Embedding = Embedding
function Embedding:__init(num, dim, opts)
  Module.__init(self)
  opts = V.options("Embedding", opts, { dtype = true, device = true })
  self.num_embeddings = V.integer("Embedding", "num_embeddings", num, 1)
  self.embedding_dim = V.integer("Embedding", "embedding_dim", dim, 1)
  self:register_parameter("weight", nnr.randn(num, dim, { dtype = opts.dtype, device = opts.device }))
end
-- the rows' own op checks the indices (index_select); only a failure pays for finding the bad one, so
-- that a decoding step's token costs one op
function Embedding:forward(idx)
  if idx:is_floating_point() then error("Embedding: indices must be integers, got " .. idx.dtype, 0) end
  local ok, out = pcall(F.embedding, idx, self.weight)
  if ok then return out end
  if idx:numel() > 0 then
    local lo, hi = idx:min():item(), idx:max():item()
    if lo < 1 or hi > self.num_embeddings then
      error(string.format("Embedding(%d, %d): index %d is outside 1..%d", self.num_embeddings, self.embedding_dim,
        lo < 1 and lo or hi, self.num_embeddings), 0)
    end
  end
  error(out, 0)
end
function Embedding:extra_repr() return self.num_embeddings .. ", " .. self.embedding_dim end

-- activations: a module around one function
local function activation(name, fn, repr)
  local A = Module:extend(name)
  function A:__init(arg)
    Module.__init(self)
    self.arg = arg
  end
  function A:forward(x) return fn(x, self.arg) end
  if repr then function A:extra_repr() return repr(self.arg) end end
  M[name] = A
end
activation("ReLU", F.relu)
-- a layer before it may fuse it (Module:fuse_next), unless this ReLU's forward was replaced
function M.ReLU:fusable_activation() if self.forward == M.ReLU.forward then return "relu" end end
activation("SiLU", F.silu)
activation("Mish", F.mish)
activation("Hardswish", F.hardswish)
activation("LeakyReLU", function(x, s) return F.leaky_relu(x, s or 0.01) end, function(s) return "negative_slope=" .. (s or 0.01) end)
activation("GELU", F.gelu)
activation("ELU", function(x, a) return F.elu(x, a or 1) end, function(a) return "alpha=" .. (a or 1) end)
activation("SELU", F.selu)
activation("Tanh", F.tanh)
activation("Sigmoid", F.sigmoid)
activation("Softmax", function(x, d) return F.softmax(x, d or -1) end, function(d) return "dim=" .. (d or -1) end)
activation("LogSoftmax", function(x, d) return F.log_softmax(x, d or -1) end, function(d) return "dim=" .. (d or -1) end)

-- Softplus([beta = 1[, threshold = 20]])
local Softplus = Module:extend("Softplus")
M.Softplus = Softplus
function Softplus:__init(beta, threshold)
  Module.__init(self)
  self.beta = V.number("Softplus", "beta", beta, { default = 1 })
  if self.beta == 0 then error("Softplus: beta must not be 0 (it divides)", 0) end
  self.threshold = V.number("Softplus", "threshold", threshold, { default = 20 })
end
function Softplus:forward(x) return F.softplus(x, self.beta, self.threshold) end
function Softplus:extra_repr() return "beta=" .. self.beta .. ", threshold=" .. self.threshold end

-- PReLU([num_parameters = 1[, init = 0.25[, {dtype, device}]]]): one learned slope, or one per channel (dim 2)
local PReLU = Module:extend("PReLU")
M.PReLU = PReLU
function PReLU:__init(num_parameters, init, opts)
  Module.__init(self)
  opts = V.options("PReLU", opts, { dtype = true, device = true })
  self.num_parameters = V.integer("PReLU", "num_parameters", num_parameters == nil and 1 or num_parameters, 1)
  self.init = V.number("PReLU", "init", init, { default = 0.25 })
  self:register_parameter("weight", nnr.full({ self.num_parameters }, self.init, { dtype = opts.dtype, device = opts.device }))
end
function PReLU:forward(x) return F.prelu(x, self.weight) end
function PReLU:extra_repr() return "num_parameters=" .. self.num_parameters end

-- Identity(...): returns its input; constructor arguments are accepted and unused, as PyTorch's
local Identity = Module:extend("Identity")
M.Identity = Identity
function Identity:__init() Module.__init(self) end
function Identity:forward(x) return x end

-- Dropout2d([p = 0.5]): zeroes whole channels of [N, C, H, W] or [C, H, W] in training
local Dropout2d = Module:extend("Dropout2d")
M.Dropout2d = Dropout2d
function Dropout2d:__init(p)
  Module.__init(self)
  self.p = V.probability("Dropout2d", "p", p == nil and 0.5 or p)
end
function Dropout2d:forward(x) return F.dropout2d(x, self.p, self.training) end
function Dropout2d:extra_repr() return "p=" .. self.p end

-- PixelShuffle(upscale_factor), PixelUnshuffle(downscale_factor)
local function shuffle_class(name, fn, what)
  local P = Module:extend(name)
  function P:__init(r)
    Module.__init(self)
    self[what] = V.integer(name, what, r, 1, 2 ^ 31 - 1)
  end
  function P:forward(x) return fn(x, self[what]) end
  function P:extra_repr() return what .. "=" .. self[what] end
  M[name] = P
end
shuffle_class("PixelShuffle", F.pixel_shuffle, "upscale_factor")
shuffle_class("PixelUnshuffle", F.pixel_unshuffle, "downscale_factor")

-- Upsample{size | scale_factor[, mode = "nearest"[, align_corners]]}: a module over F.interpolate
local Upsample = Module:extend("Upsample")
M.Upsample = Upsample

function Upsample:__init(opts)
  Module.__init(self)
  opts = V.options("Upsample", opts, { size = true, scale_factor = true, mode = true, align_corners = true })
  if (opts.size == nil) == (opts.scale_factor == nil) then
    error("Upsample: give exactly one of size and scale_factor", 0)
  end
  if opts.size ~= nil then self.size = { F._pair(opts.size, "size", "Upsample") } end
  if opts.scale_factor ~= nil then
    local sf = opts.scale_factor
    if type(sf) == "number" then sf = { sf, sf } end
    if type(sf) ~= "table" or #sf ~= 2 then error("Upsample: scale_factor must be a number or a pair {h, w}, got " .. tostring(opts.scale_factor), 0) end
    V.number("Upsample", "scale_factor[1]", sf[1], { above = 0 })
    V.number("Upsample", "scale_factor[2]", sf[2], { above = 0 })
    self.scale_factor = sf
  end
  self.mode = opts.mode or "nearest"
  if type(self.mode) ~= "string" then error("Upsample: mode must be a string, got " .. type(self.mode), 0) end
  if opts.align_corners ~= nil then
    V.boolean("Upsample", "align_corners", opts.align_corners)
    if self.mode == "nearest" then error("Upsample: align_corners can only be set with the interpolating modes (bilinear, ...), not 'nearest'", 0) end
  end
  self.align_corners = opts.align_corners
end

function Upsample:forward(x)
  local ok, y = pcall(F.interpolate, x, { size = self.size, scale_factor = self.scale_factor, mode = self.mode, align_corners = self.align_corners })
  if not ok then error("Upsample: " .. tostring(y), 0) end
  return y
end

function Upsample:extra_repr()
  local what = self.size and ("size=" .. table.concat(self.size, "x")) or ("scale_factor=" .. table.concat(self.scale_factor, "x"))
  return what .. ", mode=" .. self.mode
end

return M
