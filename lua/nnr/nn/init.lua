-- nnr.nn: layers, containers, losses and their functional forms.
local nn = {}

nn.Module = require "nnr.nn.module"
nn.functional = require "nnr.nn.functional"
nn.utils = require "nnr.nn.utils"
nn.Linear = require "nnr.nn.linear"
nn.Conv2d = require "nnr.nn.conv"
for _, lib in ipairs { "nnr.nn.containers", "nnr.nn.convolutions", "nnr.nn.pooling", "nnr.nn.normalization", "nnr.nn.misc",
                       "nnr.nn.loss", "nnr.nn.recurrent", "nnr.nn.attention",
                       "nnr.nn.transformer" } do
  for k, v in pairs(require(lib)) do nn[k] = v end
end

return require("nnr.names").guard(nn, "nnr.nn")
