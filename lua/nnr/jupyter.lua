-- nnrun in Jupyter: `nnrun --install-kernel` registers a kernel whose Python side (jupyter_kernel.py, on pip's
-- ipykernel) runs `nnrun --kernel-server` and passes it each cell; this module is that server, the
-- installer, and nnr.jupyter.display.
--   nnr.jupyter.display(x)   -- in a notebook: an image tensor [C, H, W] / [H, W], or a .png / .svg file, shown
--                            -- inline (nnr.plot.curves and image_grid show theirs by themselves)
-- The server reads one JSON request a line on stdin ({"code": ..., "n": ...}) and answers on the control
-- descriptor NNR_KERNEL_FD, one JSON object a line: {"kind": "stream" | "display" | "result" | "error" | "done"}.
-- Cells share the globals (the global nnr is loaded); a cell's locals end with it, as in the REPL. A cell
-- that is an expression shows its value. An error shows the user's frames (nnrun's traceback). SIGINT (the
-- kernel's interrupt) stops the running cell at its next op or Lua call; the kernel goes on.
local ffi = require "ffi"
local json = require "nnr.json"

local M = { active = false }

local control_fd
local function send(msg)
  local line = json.encode(msg) .. "\n"
  local off = 0
  while off < #line do
    local n = ffi.C.write(control_fd, ffi.cast("const char *", line) + off, #line - off)
    if n < 0 then
      if ffi.errno() ~= 4 then error("jupyter: the kernel's control pipe is closed", 0) end      -- EINTR: again
    else
      off = off + n
    end
  end
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(s)
  local out, byte = {}, string.byte
  for i = 1, #s, 3 do
    local a, b, c = byte(s, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = { math.floor(n / 262144) % 64, math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64 }
    out[#out + 1] = B64:sub(q[1] + 1, q[1] + 1) .. B64:sub(q[2] + 1, q[2] + 1) .. (b and B64:sub(q[3] + 1, q[3] + 1) or "=")
      .. (c and B64:sub(q[4] + 1, q[4] + 1) or "=")
  end
  return table.concat(out)
end
M.base64 = base64

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then error("display: cannot read " .. path .. ": " .. tostring(err), 0) end
  local s = f:read("*a")
  f:close()
  return s
end

function M.display(x)
  local nnr = require "nnr"
  if not M.active then error("display: only in the Jupyter kernel (nnrun --install-kernel); save_image or nnr.plot write files elsewhere", 0) end
  if type(x) == "string" then
    local ext = (x:match("%.(%w+)$") or ""):lower()
    if ext == "png" then send({ kind = "display", data = { ["image/png"] = base64(read_file(x)) } })
    elseif ext == "svg" then send({ kind = "display", data = { ["image/svg+xml"] = read_file(x) } })
    else error("display: a .png or .svg file, or an image tensor; got " .. x, 0) end
    return
  end
  if not nnr.is_tensor(x) then error("display: an image tensor or a .png/.svg path, got " .. type(x), 0) end
  local img = require("nnr.tensorboard")._args.image("display", x, x:dim() == 2 and "HW" or "CHW")
  local n = ffi.new("size_t[1]")
  local C = require("nnr.binding").C
  local p = C.nnr_encode_png(img.p, n)
  if p == nil then require("nnr.binding").raise() end
  local s = ffi.string(p, n[0])
  C.nnr_bytes_free(ffi.cast("char *", p))
  send({ kind = "display", data = { ["image/png"] = base64(s) } })
end

-- print and io.write as stream messages, so that they keep their order with the results
local function capture_output()
  _G.print = function(...)
    local t = {}
    for i = 1, select("#", ...) do t[i] = tostring((select(i, ...))) end
    send({ kind = "stream", name = "stdout", text = table.concat(t, "\t") .. "\n" })
  end
  local real_write = io.write
  io.write = function(...)
    local t = {}
    for i = 1, select("#", ...) do
      local v = select(i, ...)
      if type(v) ~= "string" and type(v) ~= "number" then return real_write(...) end      -- its own error
      t[i] = tostring(v)
    end
    send({ kind = "stream", name = "stdout", text = table.concat(t) })
    return io.stdout
  end
end

local function run_cell(code, n)
  local name = string.format("=In [%d]", n or 0)
  local fn = loadstring("return " .. code, name)
  if not fn then
    local err
    fn, err = loadstring(code, name)
    if not fn then
      send({ kind = "error", ename = "SyntaxError", evalue = tostring(err), traceback = { tostring(err) } })
      return "error"
    end
  end
  debug.sethook()                                     -- an interrupt that came between cells does not stop this one
  require("nnr.binding").C.nnr_clear_interrupt()
  local native = package.loaded["nnr.native"] or {}
  local results = { xpcall(fn, native.traceback or debug.traceback) }
  if results[1] then
    local n_out = select("#", unpack(results)) - 1
    if n_out > 0 then
      local t = {}
      for i = 2, n_out + 1 do t[#t + 1] = tostring(results[i]) end
      send({ kind = "result", text = table.concat(t, "\t") })
    end
    return "ok"
  end
  local msg = tostring(results[2])
  local first = msg:match("^[^\n]*")
  local interrupted = first:find("interrupted", 1, true) ~= nil
  local lines = {}
  for l in (msg .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  send({ kind = "error", ename = interrupted and "Interrupted" or "Error", evalue = first, traceback = lines })
  return "error"
end

function M.serve()
  control_fd = tonumber(os.getenv("NNR_KERNEL_FD") or "")
  if not control_fd then error("nnrun --kernel-server runs under the Jupyter kernel (jupyter_kernel.py), which gives it NNR_KERNEL_FD", 0) end
  pcall(ffi.cdef, "long write(int fd, const void *buf, size_t n);")
  rawset(_G, "nnr", require "nnr")
  M.active = true
  capture_output()
  send({ kind = "ready" })
  while true do
    local ok, line = pcall(io.read, "*l")           -- an interrupt while idle lands here: read again
    if ok then
      if line == nil then return end                -- the kernel closed stdin: shut down
      local req, err = json.decode(line)
      local status = "error"
      if type(req) ~= "table" or type(req.code) ~= "string" then
        send({ kind = "error", ename = "ProtocolError", evalue = "bad request: " .. tostring(err or line:sub(1, 80)), traceback = {} })
      else
        local ran
        ran, status = pcall(run_cell, req.code, req.n)
        if not ran then send({ kind = "error", ename = "Error", evalue = tostring(status), traceback = { tostring(status) } }); status = "error" end
      end
      io.stdout:flush()
      io.stderr:flush()
      send({ kind = "done", status = status })
    end
  end
end

-- nnrun --install-kernel ----------------------------------------------------------------------------
local function exists(path) local f = io.open(path, "r"); if f then f:close() end return f ~= nil end

-- this nnrun's own path (the kernel spec runs the same one)
local function self_path()
  pcall(ffi.cdef, "long readlink(const char *path, char *buf, size_t n);")
  local buf = ffi.new("char[4096]")
  local n = ffi.C.readlink("/proc/self/exe", buf, 4095)
  if n <= 0 then error("nnrun --install-kernel: cannot read /proc/self/exe", 0) end
  return ffi.string(buf, n)
end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- a Python that has ipykernel: --python, NNR_JUPYTER_PYTHON, or python3 on PATH
local function find_python(given)
  for _, py in ipairs { given, os.getenv("NNR_JUPYTER_PYTHON"), "python3" } do
    if py and py ~= "" then
      local p = io.popen(shell_quote(py) .. " -c 'import ipykernel; print(\"ipykernel ok\")' 2>/dev/null")
      local said = p and p:read("*a") or ""
      if p then p:close() end
      if said:find("ipykernel ok", 1, true) then return py end
      if py == given then error("nnrun --install-kernel: " .. py .. " cannot import ipykernel (pip install ipykernel)", 0) end
    end
  end
  error("nnrun --install-kernel: no Python with ipykernel found (pip install ipykernel, then --python PATH or NNR_JUPYTER_PYTHON)", 0)
end

function M.install(argv)
  local who = "nnrun --install-kernel"
  local o = { name = "nnrun" }
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--user" then o.user = true
    elseif a == "--replace" then o.replace = true
    elseif a == "--prefix" or a == "--name" or a == "--python" then
      if argv[i + 1] == nil then error(who .. ": " .. a .. " needs a value", 0) end
      o[a:sub(3)] = argv[i + 1]
      i = i + 1
    else error(who .. ": unknown option " .. a .. " (known: --user, --prefix DIR, --name NAME, --python PY, --replace)", 0) end
    i = i + 1
  end
  if not o.name:match("^[%w%._%-]+$") then error(who .. ": --name must be letters, digits, '.', '_' or '-', got '" .. o.name .. "'", 0) end
  if o.user and o.prefix then error(who .. ": --user and --prefix do not combine", 0) end
  local base
  if o.prefix then base = o.prefix .. "/share/jupyter"
  else base = os.getenv("JUPYTER_DATA_DIR") or ((os.getenv("HOME") or error(who .. ": HOME is not set", 0)) .. "/.local/share/jupyter") end
  local dir = base .. "/kernels/" .. o.name
  if exists(dir .. "/kernel.json") and not o.replace then
    error(string.format("%s: a kernel spec named %s already exists in %s; --replace overwrites it, --name picks another", who, o.name, dir), 0)
  end
  local python = find_python(o.python)
  local nnrun = self_path()
  local src = debug.getinfo(1, "S").source:match("^@(.*)/jupyter%.lua$")
  if not src or not exists(src .. "/jupyter_kernel.py") then error(who .. ": cannot find jupyter_kernel.py beside " .. tostring(src), 0) end
  require("nnr.binding").check(require("nnr.binding").C.nnr_make_dirs(dir))
  local py = read_file(src .. "/jupyter_kernel.py")
  local f = assert(io.open(dir .. "/nnr_kernel.py.tmp", "w"))
  f:write(py)
  f:close()
  os.rename(dir .. "/nnr_kernel.py.tmp", dir .. "/nnr_kernel.py")
  local spec = { argv = { python, dir .. "/nnr_kernel.py", "-f", "{connection_file}" }, display_name = "nnrun (LuaJIT)", language = "lua",
                 interrupt_mode = "message", env = { NNRUN = nnrun } }
  f = assert(io.open(dir .. "/kernel.json.tmp", "w"))
  f:write(json.encode(spec), "\n")
  f:close()
  local ok, err = os.rename(dir .. "/kernel.json.tmp", dir .. "/kernel.json")
  if not ok then error(who .. ": cannot write " .. dir .. "/kernel.json: " .. tostring(err), 0) end
  print(string.format("installed kernel spec %s in %s (python %s, nnrun %s)", o.name, dir, python, nnrun))
end

function M.main(argv)
  local cmd = argv[1]
  local rest = { unpack(argv, 2) }
  if cmd == "--kernel-server" then return M.serve() end
  return M.install(rest)
end

return M
