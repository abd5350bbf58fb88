-- A DataLoader worker that raises or tries to end the process: the epoch ends with an error naming the
-- sample (1-based) and the reason, and the loader stays usable (the next epoch gives every sample).
-- Prints one line per check and "N passed, N failed"; exits non-zero on a failure.
--   nnrun tests/faults/loader_faults.lua [image_root]
local nnr = require "nnr"
local data = nnr.data
local pass, fail = 0, 0
local function check(name, ok, detail)
  if ok then pass = pass + 1 else fail = fail + 1; print("FAIL: " .. name .. (detail and ("\n  " .. tostring(detail)) or "")) end
end

local N, BAD = 20, 7
-- a Lua dataset whose sample BAD fails while armed[1] is 1: armed is a tensor, shared with the worker
-- states by pointer, so the script can disarm it between epochs
local function flaky(how, armed)
  return setmetatable({ name = "Flaky", how = how, armed = armed, get = function(self, i)
    if i == 7 and self.armed[1] == 1 then
      if self.how == "error" then error("no sample seven", 0)
      elseif self.how == "table" then error({ code = 7 })
      elseif self.how == "exit" then os.exit(3)
      elseif self.how == "nothing" then return nil
      elseif self.how == "shape" then return nnr.ones(3), i end
    end
    return nnr.tensor({ i }), i
  end }, { __len = function() return N end })
end

-- one epoch: the sorted sample values it gave, or nil and the error
local function epoch(loader)
  local got = {}
  local ok, err = pcall(function()
    for x in loader:iter() do
      for k = 1, x:size(1) do got[#got + 1] = x[k][1] end
    end
  end)
  if not ok then return nil, err end
  table.sort(got)
  return got
end

local function all_samples(got)
  if not got or #got ~= N then return false end
  for i = 1, N do if got[i] ~= i then return false end end
  return true
end

local reasons = { error = "sample 7: no sample seven", table = "sample 7: table: ", nothing = "sample 7: get returned nothing",
                  exit = "sample 7: os.exit(3) called in a DataLoader worker: a worker cannot end the process",
                  shape = "shape" }
for _, how in ipairs { "error", "table", "exit", "nothing", "shape" } do
  for _, workers in ipairs { 0, 2 } do
    local armed = nnr.ones(1)
    local loader = data.DataLoader(flaky(how, armed), { batch_size = 4, shuffle = true, seed = 5, num_workers = workers })
    local what = string.format("%s, %d workers", how, workers)
    local got, err = epoch(loader)
    check(what .. ": the epoch fails", got == nil, "it gave " .. tostring(got and #got) .. " samples")
    err = tostring(err)
    check(what .. ": the error names the loader and the batch", err:find("DataLoader over Flaky: batch %d+ of epoch 1: ") ~= nil, err)
    check(what .. ": the error names the sample and the reason", err:find(reasons[how], 1, true) ~= nil, err)
    armed[1] = 0
    got, err = epoch(loader)
    check(what .. ": the next epoch gives every sample", all_samples(got), err)
    -- a loop stopped by the error mid-epoch, then a new iteration of the same epoch number
    armed[1] = 1
    local l2 = data.DataLoader(flaky(how, armed), { batch_size = 4, num_workers = workers })
    local first = select(2, epoch(l2))
    check(what .. ": in order, sample 7 is in batch 2", tostring(first):find("batch 2 of epoch 1: sample 7", 1, true) ~= nil, first)
    armed[1] = 0
    l2.epoch = 0
    check(what .. ": epoch 1 again, whole", all_samples((epoch(l2))))
  end
end

-- a collate function that fails names the batch; the loader goes on
do
  local ds = flaky("error", nnr.zeros(1))
  local loader = data.DataLoader(ds, { batch_size = 5, num_workers = 2, collate = function(samples)
    if samples[1][2] == 6 then error("collate refuses", 0) end
    return data.default_collate(samples)
  end })
  local got, err = epoch(loader)
  check("collate: the epoch fails naming the batch", got == nil and tostring(err):find("batch 2 of epoch 1: collate: collate refuses", 1, true) ~= nil, err)
end

-- a C dataset (ImageFolder) with a corrupt image: the C worker's error names the sample and the file
local root = arg[1]
if root then
  for _, workers in ipairs { 0, 2 } do
    local loader = data.DataLoader(data.ImageFolder(root, { channels = 1 }), { batch_size = 2, num_workers = workers })
    local got, err = epoch(loader)
    err = tostring(err)
    check("ImageFolder, " .. workers .. " workers: the epoch fails", got == nil)
    check("ImageFolder, " .. workers .. " workers: the error names the sample and the file",
      err:find("sample 3: " .. root .. "/b/bad.png: ", 1, true) ~= nil, err)
    got, err = epoch(loader)
    check("ImageFolder, " .. workers .. " workers: the next epoch fails the same way, the loader still works", got == nil
      and tostring(err):find("epoch 2: sample 3", 1, true) ~= nil, err)
  end
end

print(string.format("%d passed, %d failed", pass, fail))
if fail > 0 then os.exit(1) end
