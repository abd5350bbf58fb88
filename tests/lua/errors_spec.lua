local nnr = require "nnr"
local H = require "helpers"

describe("errors name the op and what was wrong", function()
  it("broadcasting", function()
    assert.equal("add: shapes [2, 3] and [4] cannot broadcast (dimension 2: 3 vs 4)",
      H.errmsg(function() return nnr.ones(2, 3) + nnr.ones(4) end))
    assert.matches("^mul: shapes %[2, 3%] and %[3, 2%] cannot broadcast",
      H.errmsg(function() return nnr.ones(2, 3) * nnr.ones(3, 2) end))
    assert.matches("^where: shapes", H.errmsg(function() return nnr.where(nnr.ones(2):gt(0), nnr.ones(3), 0) end))
  end)

  it("views, indices and dimensions", function()
    assert.matches("^view: shape %[4, 2%] is invalid for a tensor of shape %[3, 3%]", H.errmsg(function() return nnr.ones(3, 3):view(4, 2) end))
    assert.matches("incompatible with the strides", H.errmsg(function() return nnr.ones(3, 4):t():view(12) end))
    assert.equal("index: index 4 is out of range for dimension 1 of size 3", H.errmsg(function() return nnr.ones(3)[4] end))
    assert.equal("index: index 0 is out of range for dimension 1 of size 3 (indices are 1-based)", H.errmsg(function() return nnr.ones(3, 2)[0] end))
    assert.equal("select: index -4 is out of range for dimension 1 of size 3", H.errmsg(function() return nnr.ones(3):select(1, -4) end))
    assert.equal("sum: dimension 3 is out of range for a tensor of shape [2, 2] (expected 1..2 or -2..-1)",
      H.errmsg(function() return nnr.ones(2, 2):sum(3) end))
    assert.matches("^narrow: elements 2 to 4 are out of range for dimension 1 of size 3", H.errmsg(function() return nnr.ones(3):narrow(1, 2, 3) end))
    assert.matches("^expand: cannot expand shape %[2, 3%] to %[4, 3%]", H.errmsg(function() return nnr.ones(2, 3):expand(4, 3) end))
    assert.matches("^permute: dimension 1 repeated", H.errmsg(function() return nnr.ones(2, 3):permute(1, 1) end))
    assert.matches("^item: tensor of shape %[2%] has 2 elements, expected exactly 1", H.errmsg(function() return nnr.ones(2):item() end))
    assert.matches("^tensor: ragged nested table", H.errmsg(function() return nnr.tensor({ { 1, 2 }, { 3 } }) end))
    assert.matches("^empty: negative size in shape %[2, %-1%]", H.errmsg(function() return nnr.empty(2, -1) end))
  end)

  it("dtypes and devices", function()
    assert.matches("unknown dtype 'f8'", H.errmsg(function() return nnr.zeros(2, { dtype = "f8" }) end))
    assert.matches("device 'tpu:0': no backend plugin provides 'tpu'", H.errmsg(function() return nnr.zeros(2, { device = "tpu:0" }) end))
    assert.matches("device 'cpu:16': the cpu backend offers at most 16 devices", H.errmsg(function() return nnr.zeros(2):to("cpu:16") end))
    assert.matches("where: condition must be a bool tensor, got f32", H.errmsg(function() return nnr.where(nnr.ones(2), 1, 2) end))
    assert.matches("masked_fill: mask must be a bool tensor", H.errmsg(function() return nnr.ones(2):masked_fill(nnr.ones(2), 0) end))
  end)

  it("out of memory is an error, and the process goes on", function()
    local msg = H.errmsg(function() return nnr.empty(1e6, 1e6, 1e3) end)
    assert.matches("out of memory", msg)
    msg = H.errmsg(function() return nnr.empty(2 ^ 40) end)   -- 4 TiB
    assert.matches("out of memory: cannot allocate 4398046511104 bytes on cpu", msg)
    assert.equal(3, (nnr.ones(3) + 0):sum():item())
  end)
  it("in-place writes into overlapping memory follow PyTorch's rules", function()
    local e = nnr.zeros(3):expand(2, 3)
    assert.matches("^add_: unsupported operation: more than one element of the written%-to tensor", H.errmsg(function() e:add_(1) end))
    assert.matches("^copy_: unsupported operation: more than one element", H.errmsg(function() e:copy_(nnr.ones(2, 3)) end))
    local c = nnr.arange(1, 5):float()
    assert.matches("^add_: unsupported operation: some elements of the input tensor and the written%-to tensor",
      H.errmsg(function() c:narrow(1, 1, 3):add_(c:narrow(1, 2, 3)) end))
    -- the same block in another order is read from a copy: the right answer, where PyTorch's may race
    local b = nnr.tensor({ { 1, 2 }, { 3, 4 } })
    b:add_(b:t())
    H.assert_close(b, { { 2, 5 }, { 5, 8 } }, 0)
    local a = nnr.tensor({ 1, 2, 3 })
    a:mul_(a)
    H.assert_close(a, { 1, 4, 9 }, 0)
  end)

  it("numbers that do not fit the dtype, fractional sizes and mixed tables are refused", function()
    assert.matches("tensor: value 300 cannot be converted to u8 without overflow", H.errmsg(function() return nnr.tensor(300, { dtype = "u8" }) end))
    assert.matches("full: value nan cannot be converted to i64", H.errmsg(function() return nnr.full({ 2 }, 0 / 0, { dtype = "i64" }) end))
    assert.matches("fill_: value %-1 cannot be converted to u8", H.errmsg(function() return nnr.zeros(2, { dtype = "u8" }):fill_(-1) end))
    assert.matches("zeros: sizes must be an integer, got 2.5", H.errmsg(function() return nnr.zeros(2.5) end))
    assert.matches("index: index must be an integer, got 1.5", H.errmsg(function() return nnr.ones(3)[1.5] end))
    assert.matches("a table where a number was expected", H.errmsg(function() return nnr.tensor({ 1, { 2 } }) end))
    assert.matches("a number where a table was expected", H.errmsg(function() return nnr.tensor({ { 1 }, 2 }) end))
    assert.matches("expand: shape %[1099511627776, 1099511627776%] is too large %(integer multiplication overflow",
      H.errmsg(function() return nnr.ones(1):expand(2 ^ 40, 2 ^ 40) end))
    assert.equal(math.huge, nnr.tensor({ 1e6 }, { dtype = "f16" })[1])   -- a float rounds, as torch.tensor
  end)
end)
