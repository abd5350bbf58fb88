-- nnr.ops: tensor ops composed in Lua from the core's differentiable ops (no kernel of their own,
-- so autograd comes with them). Each file returns { methods =, functions =, functional = };
-- install(nnr) puts the methods on every tensor, the functions on nnr, and the functional forms on
-- nnr.nn.functional (loaded here, once nnr itself is complete).
local T = require "nnr.tensor"

local M = {}
M.files = { "nnr.ops.shape", "nnr.ops.math", "nnr.ops.einsum", "nnr.ops.image" }

function M.install(nnr)
  local functional = {}
  for _, name in ipairs(M.files) do
    local part = require(name)
    for k, f in pairs(part.methods) do
      T.methods[k] = f
      if rawget(nnr, k) == nil then nnr[k] = f end
    end
    for k, f in pairs(part.functions) do nnr[k] = f end
    for k, f in pairs(part.functional) do functional[k] = f end
  end
  -- nnr.nn.functional requires nnr: this runs at the end of nnr's own loading, so hand it the table
  package.loaded.nnr = nnr
  local F = require "nnr.nn.functional"
  for k, f in pairs(functional) do F[k] = f end
end

return M
