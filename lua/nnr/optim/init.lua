-- nnr.optim: optimizers with fused update kernels, and schedulers.
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
for k, v in pairs(optim.lr_scheduler) do optim[k] = v end
return optim
