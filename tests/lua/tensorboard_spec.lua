-- nnr.tensorboard.SummaryWriter and nnr.logging.JSONLinesWriter: their arguments, bad input, what they
-- write (the event files' values are read back by pip's tensorboard in tests/tensorboard/, ctest
-- tensorboard_readback), and nnr.json
local nnr = require "nnr"
local json = require "nnr.json"

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  return d
end

local function fails(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.is_truthy(tostring(err):find(pattern, 1, true), tostring(err))
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

describe("nnr.tensorboard.SummaryWriter", function()
  it("writes an event file in a new folder (parents too), records framed with their CRCs", function()
    local dir = tmpdir() .. "/a/b"
    local w = nnr.tensorboard.SummaryWriter(dir, { max_queue = 1 })
    assert.are.equal(dir, w:get_logdir())
    assert.is_truthy(w.path:find(dir .. "/events.out.tfevents.", 1, true))
    w:add_scalar("x", 1.5, 2)
    local s = read(w.path)
    -- two records: the version, then the scalar; each is 8 + 4 + length + 4 bytes
    local n1 = s:byte(1) + 256 * s:byte(2)
    local at = 12 + n1 + 4
    local n2 = s:byte(at + 1) + 256 * s:byte(at + 2)
    assert.are.equal(#s, at + 12 + n2 + 4)
    assert.is_truthy(s:find("brain.Event:2", 1, true))
    w:close()
    os.execute("rm -rf '" .. dir:match("^(.*)/a/b$") .. "'")
  end)

  it("queues records until max_queue, flush or close", function()
    local dir = tmpdir()
    local w = nnr.tensorboard.SummaryWriter(dir, { max_queue = 3, flush_secs = 1e6 })
    local size0 = #read(w.path)
    w:add_scalar("x", 1, 0)
    w:add_scalar("x", 2, 1)
    assert.are.equal(size0, #read(w.path))         -- two queued
    w:add_scalar("x", 3, 2)
    local size3 = #read(w.path)
    assert.is_true(size3 > size0)                   -- the third wrote all three
    w:add_text("t", "hello", 0)
    w:flush()
    assert.is_true(#read(w.path) > size3)
    w:close()
    w:close()
    fails("add_scalar: the writer is closed", function() w:add_scalar("x", 1, 0) end)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("refuses bad arguments with clear errors", function()
    local dir = tmpdir()
    local w = nnr.tensorboard.SummaryWriter(dir)
    fails("add_scalar: tag must be a non-empty string", function() w:add_scalar("", 1, 0) end)
    fails("add_scalar: tag must be a non-empty string", function() w:add_scalar(3, 1, 0) end)
    fails("add_scalar: global_step must be an integer >= 0, got -1", function() w:add_scalar("x", 1, -1) end)
    fails("add_scalar: global_step must be an integer >= 0, got 1.5", function() w:add_scalar("x", 1, 1.5) end)
    fails("add_scalar: walltime must be a finite number > 0, got nan", function() w:add_scalar("x", 1, 0, 0 / 0) end)
    fails("add_scalar: scalar_value must be a number or a one-element tensor, got string", function() w:add_scalar("x", "1", 0) end)
    fails("a tensor of 3 elements", function() w:add_scalar("x", nnr.ones(3), 0) end)
    fails("add_histogram: the values hold NaN", function() w:add_histogram("h", nnr.tensor({ 1, 0 / 0 }), 0) end)
    fails("add_histogram: the values hold an infinity", function() w:add_histogram("h", nnr.tensor({ 1, math.huge }), 0, 5) end)
    fails("add_histogram: values is empty", function() w:add_histogram("h", nnr.empty(0), 0) end)
    fails("add_histogram: bins must be 'tensorflow' or a number of buckets, got 'auto'", function() w:add_histogram("h", nnr.ones(3), 0, "auto") end)
    fails("add_histogram: bins must be an integer", function() w:add_histogram("h", nnr.ones(3), 0, 0) end)
    fails("add_image: an image in CHW has 3 dimensions, got [4, 4]", function() w:add_image("i", nnr.rand(4, 4), 0) end)
    fails("add_image: an image has 1, 3 or 4 channels, got 2", function() w:add_image("i", nnr.rand(2, 4, 4), 0) end)
    fails("add_image: dataformats must be 'CHW', 'HWC' or 'HW', got 'NCHW'", function() w:add_image("i", nnr.rand(1, 4, 4), 0, nil, "NCHW") end)
    fails("add_image: img_tensor holds NaN", function() w:add_image("i", nnr.full({ 1, 2, 2 }, 0 / 0), 0) end)
    fails("add_image: img_tensor must be u8 or floating point in [0, 1], got i64", function() w:add_image("i", nnr.ones(1, 2, 2, { dtype = "i64" }), 0) end)
    fails("add_text: text_string must be a string, got number", function() w:add_text("t", 3, 0) end)
    fails("add_hparams: hparam lr must be a finite number, got nan", function() w:add_hparams({ lr = 0 / 0 }, { a = 1 }) end)
    fails("add_hparams: hparam opt must be a number, a string or a boolean, got table", function() w:add_hparams({ opt = {} }, { a = 1 }) end)
    fails("add_hparams: metric_dict must be a table, got nil", function() w:add_hparams({ lr = 1 }) end)
    fails("add_hparams: run_name must be a non-empty name without '/'", function() w:add_hparams({ lr = 1 }, { a = 1 }, nil, "a/b") end)
    fails("add_hparams: hparam_domain_discrete is not supported", function() w:add_hparams({ lr = 1 }, { a = 1 }, { lr = { 1, 2 } }) end)
    w:close()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("says why it cannot write, and names unknown options", function()
    fails("SummaryWriter: unknown option 'flush_sec'", function() nnr.tensorboard.SummaryWriter(tmpdir(), { flush_sec = 1 }) end)
    fails("SummaryWriter: max_queue must be an integer", function() nnr.tensorboard.SummaryWriter(tmpdir(), { max_queue = 0 }) end)
    fails("SummaryWriter: flush_secs must be a finite number >= 0, got nan", function() nnr.tensorboard.SummaryWriter(tmpdir(), { flush_secs = 0 / 0 }) end)
    fails("a file name suffix must not hold '/'", function() nnr.tensorboard.SummaryWriter(tmpdir(), { filename_suffix = "a/b" }) end)
    local f = os.tmpname()                          -- a file where a folder should be
    fails("cannot make the directory " .. f .. ": it is not a directory", function() nnr.tensorboard.SummaryWriter(f .. "/run") end)
    fails("cannot make the directory /proc/nnr_tb", function() nnr.tensorboard.SummaryWriter("/proc/nnr_tb") end)
    fails("SummaryWriter: log_dir is empty", function() nnr.tensorboard.SummaryWriter("") end)
    os.remove(f)
  end)
end)

describe("nnr.logging.JSONLinesWriter", function()
  it("writes SummaryWriter's calls as JSON lines, NaN included, and images as PNG files", function()
    local dir = tmpdir()
    os.execute("mkdir -p '" .. dir .. "'")
    local w = nnr.logging.JSONLinesWriter(dir .. "/m.jsonl", { max_queue = 100 })
    w:add_scalar("loss", 0.25, 1, 1700000000)
    w:add_scalar("loss", 0 / 0, 2, 1700000001)
    w:add_histogram("h", { 1, 2, 2, 3 }, 1, 3, 1700000002)
    w:add_image("img/a", nnr.zeros(1, 2, 3), 4, 1700000003)
    w:add_text("t", 'say "hi"\n', 0, 1700000004)
    assert.are.equal("", read(dir .. "/m.jsonl"))  -- queued
    w:close()
    local lines = {}
    for l in io.lines(dir .. "/m.jsonl") do lines[#lines + 1] = l end
    assert.are.same({
      '{"kind":"scalar","step":1,"tag":"loss","value":0.25,"wall_time":1700000000}',
      '{"kind":"scalar","step":2,"tag":"loss","value":NaN,"wall_time":1700000001}',
      '{"bucket":[1,2,1],"bucket_limit":[1.6666666666666665,2.333333333333333,3],"kind":"histogram","max":3,"min":1,"num":4,"step":1,"sum":8,'
        .. '"sum_squares":18,"tag":"h","wall_time":1700000002}',
      '{"channels":1,"file":"images/img_a_4.png","height":2,"kind":"image","step":4,"tag":"img/a","wall_time":1700000003,"width":3}',
      '{"kind":"text","step":0,"tag":"t","text":"say \\"hi\\"\\n","wall_time":1700000004}',
    }, lines)
    local img = nnr.data.load_image(dir .. "/images/img_a_4.png")
    assert.are.same({ 1, 2, 3 }, img.shape)
    fails("add_scalar: global_step must be an integer >= 0", function() nnr.logging.JSONLinesWriter(dir .. "/n.jsonl"):add_scalar("x", 1, -2) end)
    fails("JSONLinesWriter: cannot write /proc/nnr.jsonl", function() nnr.logging.JSONLinesWriter("/proc/nnr.jsonl") end)
    fails("JSONLinesWriter: unknown option 'apend'", function() nnr.logging.JSONLinesWriter(dir .. "/n.jsonl", { apend = true }) end)
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)

describe("nnr.json", function()
  it("writes every bit of a number, NaN and infinities as Python reads them, sorted keys, escapes", function()
    assert.are.equal('{"a":[1,2.5,-0.0],"b":true,"c":"x\\"\\n\\u0001"}', json.encode({ b = true, a = { 1, 2.5, -0.0 }, c = 'x"\n\1' }))
    assert.are.equal("[NaN,Infinity,-Infinity]", json.encode({ 0 / 0, math.huge, -math.huge }))
    assert.are.equal("0.1", json.encode(0.1))
    assert.are.equal(0.1 + 0.2, tonumber(json.encode(0.1 + 0.2)))
    assert.are.equal(1 / 3, tonumber(json.encode(1 / 3)))
    assert.are.equal("{}", json.encode({}))
    local cyc = {}
    cyc.self = cyc
    fails("nested more than 100 deep", json.encode, cyc)
    fails("json: cannot write a function", json.encode, { f = print })
  end)
end)
