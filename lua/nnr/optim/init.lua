-- nnr.optim: optimizers (fused update kernels, or in-place tensor ops), schedulers, and weight
-- averaging (swa_utils).
local optim = {}
optim.Optimizer = require "nnr.optim.optimizer"
optim.SGD = require "nnr.optim.sgd"
local adam = require "nnr.optim.adam"
optim.Adam, optim.AdamW = adam.Adam, adam.AdamW
optim.RMSprop = require "nnr.optim.rmsprop"
optim.Adagrad = require "nnr.optim.adagrad"
optim.LBFGS = require "nnr.optim.lbfgs"
optim.Lion = require "nnr.optim.lion"
optim.lr_scheduler = require "nnr.optim.lr_scheduler"
for k, v in pairs(optim.lr_scheduler) do if k:sub(1, 1) ~= "_" then optim[k] = v end end
optim.swa_utils = require "nnr.optim.swa_utils"
return require("nnr.names").guard(optim, "nnr.optim")
