-- Dropout, Flatten, Embedding and the activations.
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
function Embedding:forward(idx)
  if idx:is_floating_point() then error("Embedding: indices must be integers, got " .. idx.dtype, 0) end
  local lo, hi = idx:min():item(), idx:max():item()
  if lo < 1 or hi > self.num_embeddings then
    error(string.format("Embedding(%d, %d): index %d is outside 1..%d", self.num_embeddings, self.embedding_dim,
      lo < 1 and lo or hi, self.num_embeddings), 0)
  end
  return F.embedding(idx, self.weight)
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
activation("LeakyReLU", function(x, s) return F.leaky_relu(x, s or 0.01) end, function(s) return "negative_slope=" .. (s or 0.01) end)
activation("GELU", F.gelu)
activation("ELU", function(x, a) return F.elu(x, a or 1) end, function(a) return "alpha=" .. (a or 1) end)
activation("Tanh", F.tanh)
activation("Sigmoid", F.sigmoid)
activation("Softmax", function(x, d) return F.softmax(x, d or -1) end, function(d) return "dim=" .. (d or -1) end)
activation("LogSoftmax", function(x, d) return F.log_softmax(x, d or -1) end, function(d) return "dim=" .. (d or -1) end)

return M
