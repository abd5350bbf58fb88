-- Recurrent layers with PyTorch's names, shapes, gate order and initialisation (U(-1/sqrt(H), 1/sqrt(H))),
-- so that state dicts move both ways:
--   nn.RNN(input_size, hidden_size, {num_layers = 1, nonlinearity = "tanh" | "relu", bias = true,
--          batch_first = false, dropout = 0, bidirectional = false})
--   nn.LSTM(input_size, hidden_size, {... as RNN without nonlinearity, proj_size = 0})
--   nn.GRU(input_size, hidden_size, {... as LSTM without proj_size})
--   m(input[, hx]) -> output, h_n (LSTM: output, {h_n, c_n}). input [T, B, I] ([B, T, I] with batch_first,
--   [T, I] unbatched); h_n [layers * directions, B, P]; output [T, B, directions * P] (P = proj_size or H).
--   nn.RNNCell / nn.LSTMCell / nn.GRUCell(input_size, hidden_size, {bias = true, nonlinearity}):
--   cell(x[, h]) -> h' (LSTMCell: cell(x[, {h, c}]) -> h', c').
-- Each layer and direction is one op over the whole sequence (F.rnn_layer, in C: one gemm for the input
-- projection of every step, then per step the recurrent gemm and one call for the gates; a fused
-- backward through time).
local nnr = require "nnr"
local ffi = require "ffi"
local binding = require "nnr.binding"
local Module = require "nnr.nn.module"
local F = require "nnr.nn.functional"
local V = require "nnr.check"
local C = binding.C
local tp = require("nnr.tensor").tp

local M = {}
local MODES = { rnn_tanh = C.NNR_RNN_TANH, rnn_relu = C.NNR_RNN_RELU, lstm = C.NNR_RNN_LSTM, gru = C.NNR_RNN_GRU }
local GATES = { rnn_tanh = 1, rnn_relu = 1, lstm = 4, gru = 3 }
local outs = ffi.new("nnr_tensor *[3]")

local function opt_p(who, t, what)
  if t == nil then return nil end
  if not nnr.is_tensor(t) then error(who .. ": " .. what .. " must be a tensor or nil, got " .. type(t), 0) end
  return t.p
end

-- F.rnn_layer(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse) -> y, h_n, c_n: one layer and
-- direction over a time-major x [T, B, I]; mode "rnn_tanh", "rnn_relu", "lstm" or "gru"
function F.rnn_layer(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse)
  local m = MODES[mode] or error("rnn_layer: mode must be rnn_tanh, rnn_relu, lstm or gru, got " .. tostring(mode), 0)
  local who = mode
  outs[0], outs[1], outs[2] = nil, nil, nil
  binding.check(C.nnr_rnn_layer(m, reverse and 1 or 0, tp(who, x, "input"), tp(who, h0, "h0"),
    opt_p(who, c0, "c0"), tp(who, w_ih, "weight_ih"), tp(who, w_hh, "weight_hh"), opt_p(who, b_ih, "bias_ih"),
    opt_p(who, b_hh, "bias_hh"), opt_p(who, w_hr, "weight_hr"), outs, outs + 1, mode == "lstm" and outs + 2 or nil))
  local y, h = binding.own(outs[0]), binding.own(outs[1])
  return y, h, mode == "lstm" and binding.own(outs[2]) or nil
end

-- the hidden state and, for LSTM, the cell state given as hx (either may be nil: zeros); an LSTM's hx
-- is a pair, described by pair in the error
local function split_hx(self, hx, pair)
  if self.mode ~= "lstm" then return hx, nil end
  if hx ~= nil and (type(hx) ~= "table" or #hx ~= 2) then error(self.__name .. ": hx must be " .. pair, 0) end
  return hx and hx[1], hx and hx[2]
end

-- ---------------------------------------------------------------- the multi-layer modules
local RNNBase = Module:extend("RNNBase")

local function init_base(self, name, mode, input_size, hidden_size, opts, extra)
  Module.__init(self)
  local known = { num_layers = true, bias = true, batch_first = true, dropout = true, bidirectional = true, dtype = true, device = true }
  for k in pairs(extra) do known[k] = true end
  opts = V.options(name, opts, known)
  self.input_size = V.integer(name, "input_size", input_size, 1)
  self.hidden_size = V.integer(name, "hidden_size", hidden_size, 1)
  self.num_layers = V.integer(name, "num_layers", opts.num_layers or 1, 1)
  self.bias = opts.bias == nil or V.boolean(name, "bias", opts.bias)
  self.batch_first = V.boolean(name, "batch_first", opts.batch_first) or false
  self.dropout = V.probability(name, "dropout", opts.dropout or 0)
  self.bidirectional = V.boolean(name, "bidirectional", opts.bidirectional) or false
  self.proj_size = V.integer(name, "proj_size", opts.proj_size or 0, 0)
  if self.proj_size >= self.hidden_size then
    error(string.format("%s: proj_size (%d) must be smaller than hidden_size (%d)", name, self.proj_size, self.hidden_size), 0)
  end
  if opts.nonlinearity ~= nil then
    V.choice(name, "nonlinearity", opts.nonlinearity, { "tanh", "relu" })
    mode = "rnn_" .. opts.nonlinearity
  end
  self.nonlinearity = mode == "rnn_relu" and "relu" or mode == "rnn_tanh" and "tanh" or nil
  self.mode = mode
  local H, P, G = self.hidden_size, self.proj_size > 0 and self.proj_size or self.hidden_size, GATES[mode]
  local D = self.bidirectional and 2 or 1
  local bound, o = 1 / math.sqrt(H), { dtype = opts.dtype, device = opts.device }
  for l = 0, self.num_layers - 1 do
    local in_size = l == 0 and self.input_size or P * D
    for d = 0, D - 1 do
      local sfx = "_l" .. l .. (d == 1 and "_reverse" or "")
      self:register_parameter("weight_ih" .. sfx, nnr.empty(G * H, in_size, o):uniform_(-bound, bound))
      self:register_parameter("weight_hh" .. sfx, nnr.empty(G * H, P, o):uniform_(-bound, bound))
      if self.bias then
        self:register_parameter("bias_ih" .. sfx, nnr.empty(G * H, o):uniform_(-bound, bound))
        self:register_parameter("bias_hh" .. sfx, nnr.empty(G * H, o):uniform_(-bound, bound))
      end
      if self.proj_size > 0 then self:register_parameter("weight_hr" .. sfx, nnr.empty(P, H, o):uniform_(-bound, bound)) end
    end
  end
end

local function shape(t) return nnr.shape_str(t:size()) end

-- the initial states as [L * D, B, n] tensors: given ones checked, absent ones zeros
local function initial(self, hx, x, B, unbatched)
  local name, D = self.__name, self.bidirectional and 2 or 1
  local H, P, n = self.hidden_size, self.proj_size > 0 and self.proj_size or self.hidden_size, self.num_layers * D
  local o = { dtype = x.dtype, device = x.device }
  local h0, c0 = split_hx(self, hx, "{h_0, c_0}")
  local function state(t, size, what)
    if t == nil then return nnr.zeros(n, B, size, o) end
    if not nnr.is_tensor(t) then error(name .. ": " .. what .. " must be a tensor, got " .. type(t), 0) end
    local want = unbatched and { n, size } or { n, B, size }
    if t:dim() ~= #want or t:size(1) ~= n or t:size(-1) ~= size or (not unbatched and t:size(2) ~= B) then
      error(string.format("%s: %s has shape %s, expected %s", name, what, shape(t), nnr.shape_str(want)), 0)
    end
    return unbatched and t:unsqueeze(2) or t
  end
  return state(h0, P, "h_0"), self.mode == "lstm" and state(c0, H, "c_0") or nil
end

function RNNBase:forward(x, hx)
  local name = self.__name
  if not nnr.is_tensor(x) then error(name .. ": input must be a tensor, got " .. type(x), 0) end
  local unbatched = x:dim() == 2
  if x:dim() ~= 3 and not unbatched then error(name .. ": input must be 2-d (unbatched) or 3-d, got shape " .. shape(x), 0) end
  if x:size(-1) ~= self.input_size then
    error(string.format("%s: input has shape %s, expected input_size %d in its last dim", name, shape(x), self.input_size), 0)
  end
  if unbatched then x = x:unsqueeze(2) elseif self.batch_first then x = x:transpose(1, 2) end
  local h0, c0 = initial(self, hx, x, x:size(2), unbatched)
  local D = self.bidirectional and 2 or 1
  local hs, cs = {}, {}
  for l = 0, self.num_layers - 1 do
    local ys = {}
    for d = 0, D - 1 do
      local sfx, k = "_l" .. l .. (d == 1 and "_reverse" or ""), l * D + d + 1
      local y, h, c = F.rnn_layer(self.mode, x, h0:select(1, k), c0 and c0:select(1, k), rawget(self, "weight_ih" .. sfx),
        rawget(self, "weight_hh" .. sfx), rawget(self, "bias_ih" .. sfx), rawget(self, "bias_hh" .. sfx), rawget(self, "weight_hr" .. sfx), d == 1)
      ys[#ys + 1], hs[#hs + 1], cs[#cs + 1] = y, h, c
    end
    x = D == 1 and ys[1] or nnr.cat(ys, 3)
    if self.dropout > 0 and l < self.num_layers - 1 then x = F.dropout(x, self.dropout, self.training) end
  end
  local hn, cn = nnr.stack(hs, 1), self.mode == "lstm" and nnr.stack(cs, 1) or nil
  if unbatched then
    x, hn, cn = x:squeeze(2), hn:squeeze(2), cn and cn:squeeze(2)
  elseif self.batch_first then
    x = x:transpose(1, 2)
  end
  if self.mode == "lstm" then return x, { hn, cn } end
  return x, hn
end

function RNNBase:extra_repr()
  local s = string.format("%d, %d", self.input_size, self.hidden_size)
  if self.proj_size > 0 then s = s .. ", proj_size=" .. self.proj_size end
  if self.num_layers ~= 1 then s = s .. ", num_layers=" .. self.num_layers end
  if self.nonlinearity == "relu" then s = s .. ", nonlinearity=relu" end
  if not self.bias then s = s .. ", bias=false" end
  if self.batch_first then s = s .. ", batch_first=true" end
  if self.dropout > 0 then s = s .. ", dropout=" .. self.dropout end
  if self.bidirectional then s = s .. ", bidirectional=true" end
  return s
end

M.RNN = RNNBase:extend("RNN")
function M.RNN:__init(i, h, opts) init_base(self, "RNN", "rnn_tanh", i, h, opts, { nonlinearity = true }) end
M.LSTM = RNNBase:extend("LSTM")
function M.LSTM:__init(i, h, opts) init_base(self, "LSTM", "lstm", i, h, opts, { proj_size = true }) end
M.GRU = RNNBase:extend("GRU")
function M.GRU:__init(i, h, opts) init_base(self, "GRU", "gru", i, h, opts, {}) end

-- ---------------------------------------------------------------- cells: one step, T = 1
local CellBase = Module:extend("RNNCellBase")

local function init_cell(self, name, mode, input_size, hidden_size, opts, extra)
  Module.__init(self)
  local known = { bias = true, dtype = true, device = true }
  for k in pairs(extra) do known[k] = true end
  opts = V.options(name, opts, known)
  self.input_size = V.integer(name, "input_size", input_size, 1)
  self.hidden_size = V.integer(name, "hidden_size", hidden_size, 1)
  self.bias = opts.bias == nil or V.boolean(name, "bias", opts.bias)
  if opts.nonlinearity ~= nil then mode = "rnn_" .. V.choice(name, "nonlinearity", opts.nonlinearity, { "tanh", "relu" }) end
  self.nonlinearity = mode == "rnn_relu" and "relu" or mode == "rnn_tanh" and "tanh" or nil
  self.mode = mode
  local H, G = self.hidden_size, GATES[mode]
  local bound, o = 1 / math.sqrt(H), { dtype = opts.dtype, device = opts.device }
  self:register_parameter("weight_ih", nnr.empty(G * H, self.input_size, o):uniform_(-bound, bound))
  self:register_parameter("weight_hh", nnr.empty(G * H, H, o):uniform_(-bound, bound))
  if self.bias then
    self:register_parameter("bias_ih", nnr.empty(G * H, o):uniform_(-bound, bound))
    self:register_parameter("bias_hh", nnr.empty(G * H, o):uniform_(-bound, bound))
  end
end

function CellBase:forward(x, hx)
  local name, H = self.__name, self.hidden_size
  if not nnr.is_tensor(x) or (x:dim() ~= 1 and x:dim() ~= 2) or x:size(-1) ~= self.input_size then
    error(string.format("%s: input must be a tensor [B, %d] or [%d], got %s", name, self.input_size, self.input_size,
      nnr.is_tensor(x) and shape(x) or type(x)), 0)
  end
  local unbatched = x:dim() == 1
  if unbatched then x = x:unsqueeze(1) end
  local B, o = x:size(1), { dtype = x.dtype, device = x.device }
  local h, c = split_hx(self, hx, "{h, c}")
  local function state(t, what)
    if t == nil then return nnr.zeros(B, H, o) end
    if not nnr.is_tensor(t) or t:dim() ~= x:dim() - (unbatched and 1 or 0) or t:size(-1) ~= H or (not unbatched and t:size(1) ~= B) then
      error(string.format("%s: %s must be [%s%d], got %s", name, what, unbatched and "" or B .. ", ", H,
        nnr.is_tensor(t) and shape(t) or type(t)), 0)
    end
    return unbatched and t:unsqueeze(1) or t
  end
  h = state(h, "h")
  if self.mode == "lstm" then c = state(c, "c") end
  local _, hn, cn = F.rnn_layer(self.mode, x:unsqueeze(1), h, c, self.weight_ih, self.weight_hh, rawget(self, "bias_ih"),
    rawget(self, "bias_hh"))
  if unbatched then hn, cn = hn:squeeze(1), cn and cn:squeeze(1) end
  if self.mode == "lstm" then return hn, cn end
  return hn
end

function CellBase:extra_repr()
  local s = string.format("%d, %d", self.input_size, self.hidden_size)
  if self.nonlinearity == "relu" then s = s .. ", nonlinearity=relu" end
  if not self.bias then s = s .. ", bias=false" end
  return s
end

M.RNNCell = CellBase:extend("RNNCell")
function M.RNNCell:__init(i, h, opts) init_cell(self, "RNNCell", "rnn_tanh", i, h, opts, { nonlinearity = true }) end
M.LSTMCell = CellBase:extend("LSTMCell")
function M.LSTMCell:__init(i, h, opts) init_cell(self, "LSTMCell", "lstm", i, h, opts, {}) end
M.GRUCell = CellBase:extend("GRUCell")
function M.GRUCell:__init(i, h, opts) init_cell(self, "GRUCell", "gru", i, h, opts, {}) end

return M
