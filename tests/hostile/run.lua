-- The hostile-input suite (issue 15): every public entry point fed inputs that must be refused with
-- a clear error (or, for the few legal edges, accepted), never a signal, a hang or silent nonsense.
--
--   nnrun tests/hostile/run.lua [--filter PAT] [--list] [--verbose] [--timeout S] [--nnrun PATH]
--
-- Run it from the repository root. api_cases.lua holds the in-process cases ({name, fn, expected},
-- one line each); cli_cases.lua the command-line, script, REPL, environment and plugin ones. Each case
-- runs in a child nnrun of its own (start-up is about 20 ms) under `timeout` (--timeout S, default 20;
-- a case may ask for its own), so a SIGSEGV, an abort or a hang is reported as that case failing and
-- the others still run. In the child an api case must raise an error whose message matches its
-- pattern (or, for a "must succeed" case, return without error and pass its check); any error message
-- must also be clean (no control bytes, no "(null)", no empty "()", not built from its own text); and
-- the process must stay usable afterwards: a full GC and a sanity op run after the case.
-- Patterns are Lua patterns with one addition: "a|b" matches when either does ("%|" is a bar).
-- PAT (--filter) is such a pattern, matched against the case names ("^tensor:", "overlap|expanded").
-- nnrun is --nnrun, else $NNRUN, else build/bin/nnrun; the test plugins (cli cases) are
-- $NNR_TEST_PLUGIN_DIR, else beside nnrun's build (build/bin/nnrun -> build/tests/plugins).
-- Temporary files live in one folder made with os.tmpname(), removed at the end.
-- The last line is "N passed, N failed"; the exit status is non-zero on any failure.
local HERE = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$")) or "tests/hostile"

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

-- helpers the cases get (H): files in the case's own temp folder, and a few fixtures
local function make_helpers(tmp, nnr)
  local H = { tmp = tmp, nnr = nnr }
  local made = false
  function H.path(name)
    if not made then os.execute("mkdir -p " .. shell_quote(tmp)); made = true end
    return tmp .. "/" .. name
  end
  function H.write(name, data)
    local p = H.path(name)
    local dir = p:match("^(.*)/[^/]*$")
    if dir ~= tmp then os.execute("mkdir -p " .. shell_quote(dir)) end
    write_file(p, data)
    return p
  end
  function H.mkdir(name) local p = H.path(name); os.execute("mkdir -p " .. shell_quote(p)); return p end
  -- an IDX file: dtype code (0x08 u8 ...), dims, then the raw bytes given (or zeros to fill)
  function H.idx(name, code, dims, body)
    local parts = { string.char(0, 0, code, #dims) }
    local n = 1
    for _, d in ipairs(dims) do
      parts[#parts + 1] = string.char(math.floor(d / 2 ^ 24) % 256, math.floor(d / 2 ^ 16) % 256, math.floor(d / 256) % 256, d % 256)
      n = n * d
    end
    parts[#parts + 1] = body or string.rep("\0", n)
    return H.write(name, table.concat(parts))
  end
  -- a small PNG (through nnr's own encoder) at root/class/file
  function H.png(relpath, c, h, w)
    local p = H.path(relpath)
    os.execute("mkdir -p " .. shell_quote(p:match("^(.*)/[^/]*$")))
    nnr.data.save_image(p, nnr.zeros(c or 3, h or 4, w or 4, { dtype = "u8" }))
    return p
  end
  -- a Lua dataset of n samples (x: f32 [2], y: the index) with optional overrides
  function H.luads(n, get)
    return setmetatable({ n = n, get = get or function(_, i) return nnr.tensor({ i, i }), i end },
      { __len = function(self) return self.n end })
  end
  -- runs a loader's first epoch to the end; returns the number of batches
  function H.drain(loader)
    local k = 0
    for _ in loader:iter() do k = k + 1 end
    return k
  end
  return H
end

-- pattern matching with alternatives: "a|b" matches when the Lua pattern a or b matches ("%|" is a
-- literal bar; Lua patterns have no alternation of their own)
local function matches(s, pat)
  local start = 1
  local i = 1
  while i <= #pat do
    local ch = pat:sub(i, i)
    if ch == "%" then i = i + 1
    elseif ch == "|" then
      if s:find(pat:sub(start, i - 1)) then return true end
      start = i + 1
    end
    i = i + 1
  end
  return s:find(pat:sub(start)) ~= nil
end

-- a message that is not a clean string: an error built from another error's text, control bytes, (null)
local function garbled(msg)
  if type(msg) ~= "string" then return "the error value is a " .. type(msg) .. ", not a message" end
  if msg == "" then return "the error message is empty" end
  if msg:find("[%z\1-\8\11\12\14-\31\127]") then return "the message holds control bytes" end
  if msg:find("(null)", 1, true) then return "the message says (null)" end
  if msg:find(" ()", 1, true) then return "the message holds an empty reason \"()\"" end
  local head = msg:sub(1, 24)
  if #head >= 24 and head:find(": ", 1, true) and msg:find(head, 2, true) then return "the message repeats itself (built from its own text?)" end
  return nil
end

local function one_line(s)
  s = tostring(s):gsub("\n", "\\n"):gsub("[%z\1-\31]", "?")
  if #s > 400 then s = s:sub(1, 400) .. "..." end
  return s
end

-- child: runs api case `index` and prints one result line ------------------------------------------
local function child(index, tmp)
  local nnr = require "nnr"
  local H = make_helpers(tmp, nnr)
  local cases = dofile(HERE .. "/api_cases.lua")(nnr, H)
  local c = cases[index]
  local fn, expected = c[2], c[3]
  local results = { pcall(fn) }
  local ok, err = results[1], results[2]
  local verdict
  local check
  if type(expected) == "table" then expected, check = expected[1], expected[2] end
  -- a check that raises counts as a wrong result
  local function run_check(f)
    local okc, good, why = pcall(f, select(2, unpack(results)))
    if not okc then return false, "its check raised: " .. tostring(good) end
    return good, why
  end
  if check and ok then
    local good, why = run_check(check)
    verdict = good and "PASS succeeded with the right result" or ("FAIL succeeded but wrong: " .. tostring(why))
  elseif type(expected) == "string" then
    if ok then
      local shown = {}
      for i = 2, math.min(#results, 3) do
        local v = results[i]
        local s = nnr.is_tensor(v) and (v:numel() <= 8 and tostring(v) or ("tensor of shape " .. tostring(v:size()) .. " " .. v.dtype))
          or tostring(v)
        shown[#shown + 1] = s
      end
      verdict = "FAIL no error raised; returned " .. (#shown > 0 and table.concat(shown, " | ") or "nothing")
    else
      local bad = garbled(err)
      if bad then verdict = "FAIL garbled error (" .. bad .. "): " .. tostring(err)
      elseif not matches(err, expected) then verdict = "FAIL wrong message: " .. err .. "  (expected /" .. expected .. "/)"
      else verdict = "PASS " .. err end
    end
  else
    if not ok then verdict = "FAIL must succeed, raised: " .. tostring(err)
    elseif type(expected) == "function" then
      local good, why = run_check(expected)
      verdict = good and "PASS succeeded as it should" or ("FAIL succeeded but wrong: " .. tostring(why))
    else verdict = "PASS succeeded as it should" end
  end
  -- the process stays usable: a full collection (finalizers of whatever the case left) and a sanity op
  local sane, why = pcall(function()
    collectgarbage(); collectgarbage()
    local s = (nnr.ones(3) + nnr.arange(3)):sum():item()
    assert(s == 6, "sanity op gave " .. tostring(s))
    local m = nnr.randn(4, 5):matmul(nnr.ones(5, 2)):sum():item()
    assert(m == m, "matmul gave NaN")
  end)
  if not sane then verdict = "FAIL not usable after the case: " .. tostring(why) .. " (case: " .. verdict .. ")" end
  io.stdout:write("\n@@RESULT ", one_line(verdict), "\n")
  io.stdout:flush()
  os.exit(0, true)
end

-- parent --------------------------------------------------------------------------------------------
local function signal_name(n)
  local names = { [1] = "SIGHUP", [2] = "SIGINT", [3] = "SIGQUIT", [4] = "SIGILL", [5] = "SIGTRAP", [6] = "SIGABRT", [7] = "SIGBUS",
                  [8] = "SIGFPE", [9] = "SIGKILL", [11] = "SIGSEGV", [13] = "SIGPIPE", [15] = "SIGTERM" }
  return names[n] or ("signal " .. n)
end

-- runs a shell command with its output in files; returns status (number), stdout, stderr
local function run_shell(cmd, dir, timeout)
  local out, err = dir .. "/.stdout", dir .. "/.stderr"
  local full = string.format("timeout -k 3 %d sh -c %s >%s 2>%s; echo $?", timeout, shell_quote(cmd), shell_quote(out), shell_quote(err))
  local p = io.popen(full)
  local status = tonumber(p:read("*a"):match("(%d+)%s*$")) or -1
  p:close()
  return status, read_file(out), read_file(err)
end

local function describe_status(status, timeout)
  if status == 124 or status == 137 then return "HANG: no result within " .. timeout .. " s (killed)" end
  if status > 128 and status < 160 then return "CRASH: " .. signal_name(status - 128) end
  return nil
end

-- the start of an output (where the message is; a traceback may follow)
local function tail(s, n)
  s = s:gsub("^%s+", ""):gsub("%s+$", "")
  s = s:gsub("\nstack traceback:.*$", " [traceback]")
  if #s > (n or 300) then s = s:sub(1, n or 300) .. "..." end
  return one_line(s)
end

local function run_api_case(nnrun, index, c, tmp, timeout)
  local dir = tmp .. "/api" .. index
  os.execute("mkdir -p " .. shell_quote(dir))
  local env = ""
  if c.env then for k, v in pairs(c.env) do env = env .. k .. "=" .. shell_quote(v) .. " " end end
  local cmd = string.format("%s%s %s --child %d %s </dev/null", env, shell_quote(nnrun), shell_quote(HERE .. "/run.lua"), index,
    shell_quote(dir .. "/t"))
  local t = c.timeout or timeout
  local status, out, err = run_shell(cmd, dir, t)
  local bad = describe_status(status, t)
  if bad then return false, bad .. (err ~= "" and ("; stderr: " .. tail(err)) or "") end
  local verdict = out:match("\n@@RESULT ([^\n]*)")
  if not verdict then
    return false, "exited with status " .. status .. " without a result; stderr: " .. tail(err) .. " stdout: " .. tail(out)
  end
  if verdict:sub(1, 4) == "PASS" then return true, verdict:sub(6) end
  return false, verdict:sub(6)
end

local function run_cli_case(nnrun, index, c, tmp, timeout, root)
  local dir = tmp .. "/cli" .. index
  os.execute("mkdir -p " .. shell_quote(dir))
  for name, data in pairs(c.files or {}) do
    local p = dir .. "/" .. name
    os.execute("mkdir -p " .. shell_quote(p:match("^(.*)/[^/]*$")))
    write_file(p, data)
  end
  local stdin = "/dev/null"
  if c.stdin then write_file(dir .. "/.stdin", c.stdin); stdin = dir .. "/.stdin" end
  -- the test plugins: $NNR_TEST_PLUGIN_DIR (ctest sets it), else beside nnrun's build (build/bin/nnrun -> build/tests/plugins)
  local plugins = os.getenv("NNR_TEST_PLUGIN_DIR") or ((nnrun:match("^(.*)/bin/[^/]*$") or (root .. "/build")) .. "/tests/plugins")
  local env = string.format("NNRUN=%s PLUGINS=%s TMP=%s ROOT=%s ", shell_quote(nnrun), shell_quote(plugins), shell_quote(dir), shell_quote(root))
  for k, v in pairs(c.env or {}) do env = env .. k .. "=" .. shell_quote(v) .. " " end
  local cmd = "export " .. env .. "; " .. c[2] .. " <" .. shell_quote(stdin)
  local t = c.timeout or timeout
  local status, out, err = run_shell(cmd, dir, t)
  local bad = describe_status(status, t)
  if bad then return false, bad .. "; stderr: " .. tail(err) end
  local want = c.status
  if want == nil and status == 0 then return false, "exit status 0, expected a failure; stdout: " .. tail(out) .. " stderr: " .. tail(err) end
  if want ~= nil and status ~= want then
    return false, "exit status " .. status .. ", expected " .. want .. "; stderr: " .. tail(err) .. " stdout: " .. tail(out)
  end
  local where = c.stdout and out or err
  if c[3] and not matches(where, c[3]) then
    return false, "wrong message: " .. tail(where, 400) .. "  (expected /" .. c[3] .. "/ on " .. (c.stdout and "stdout" or "stderr") .. ")"
  end
  if c[3] then
    for line in where:gmatch("[^\n]+") do
      local bad_msg = matches(line, c[3]) and garbled(line)
      if bad_msg then return false, "garbled message (" .. bad_msg .. "): " .. one_line(line) end
    end
  end
  for _, p in ipairs(c.also or {}) do
    if not matches(out .. err, p) then return false, "missing /" .. p .. "/ in the output: " .. tail(out .. err, 400) end
  end
  for _, p in ipairs(c.never or {}) do
    local hit = (out .. "\n" .. err):match(p)
    if hit then return false, "the output holds /" .. p .. "/: " .. one_line(hit) end
  end
  return true, tail(where, 160)
end

local function parent(argv)
  local filter, list, verbose, timeout, nnrun = nil, false, false, 20, os.getenv("NNRUN")
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--filter" then filter = argv[i + 1]; i = i + 1
    elseif a == "--list" then list = true
    elseif a == "--verbose" or a == "-v" then verbose = true
    elseif a == "--timeout" then timeout = tonumber(argv[i + 1]) or error("--timeout needs a number of seconds", 0); i = i + 1
    elseif a == "--nnrun" then nnrun = argv[i + 1]; i = i + 1
    else error("run.lua: unknown argument '" .. a .. "' (--filter PAT, --list, --verbose, --timeout S, --nnrun PATH)", 0) end
    i = i + 1
  end
  nnrun = nnrun or "build/bin/nnrun"
  local p = io.popen("pwd")
  local root = p:read("*l")
  p:close()
  if not nnrun:find("^/") then nnrun = root .. "/" .. nnrun end

  local nnr = require "nnr"
  local tmp = os.tmpname()
  os.remove(tmp)
  os.execute("mkdir -p " .. shell_quote(tmp))
  local api = dofile(HERE .. "/api_cases.lua")(nnr, make_helpers(tmp .. "/list", nnr))
  local cli = dofile(HERE .. "/cli_cases.lua")
  local all = {}
  for k, c in ipairs(api) do all[#all + 1] = { kind = "api", index = k, case = c, name = c[1] } end
  for k, c in ipairs(cli) do all[#all + 1] = { kind = "cli", index = k, case = c, name = c[1] } end
  local names = {}
  for _, e in ipairs(all) do
    if names[e.name] then error("run.lua: two cases are named '" .. e.name .. "'", 0) end
    names[e.name] = true
  end
  local selected = {}
  for _, e in ipairs(all) do if not filter or matches(e.name, filter) then selected[#selected + 1] = e end end
  if list then
    for _, e in ipairs(selected) do
      local exp = e.case[3]
      local what = type(exp) == "string" and "/" .. exp .. "/" or type(exp) == "table" and "/" .. exp[1] .. "/ or a checked result"
        or "(must succeed)"
      print(string.format("%-4s %-60s %s", e.kind, e.name, one_line(what)))
    end
    print(#selected .. " cases (" .. #api .. " api, " .. #cli .. " cli)")
    os.execute("rm -rf " .. shell_quote(tmp))
    return 0
  end
  local passed, failed, failures = 0, 0, {}
  local clock0 = nnr.clock()
  for _, e in ipairs(selected) do
    local ok, why
    if e.kind == "api" then ok, why = run_api_case(nnrun, e.index, e.case, tmp, timeout)
    else ok, why = run_cli_case(nnrun, e.index, e.case, tmp, timeout, root) end
    if ok then
      passed = passed + 1
      if verbose then print("PASS " .. e.name .. (why and why ~= "" and ("  -- " .. why) or "")) end
    else
      failed = failed + 1
      failures[#failures + 1] = e.name
      print("FAIL " .. e.name .. ": " .. why)
    end
    io.stdout:flush()
  end
  os.execute("rm -rf " .. shell_quote(tmp))
  print(string.format("(%d cases in %.1f s)", #selected, nnr.clock() - clock0))
  print(passed .. " passed, " .. failed .. " failed")
  return failed == 0 and 0 or 1
end

if arg[1] == "--child" then
  child(tonumber(arg[2]), arg[3])
else
  os.exit(parent(arg))
end
