-- luarocks make: builds nnrun and its plugins with CMake and installs them into a Lua tree, so that
-- `require "nnr"` works from plain luajit and `nnrun` runs from the tree's bin/ (README, Installing).
-- Needs Debian's build dependencies (scripts/setup.sh installs them). NNR_CUDA=OFF in the environment
-- skips the cuda plugin where nvcc is installed; CMAKE_BUILD_PARALLEL_LEVEL=N builds on N cores.
rockspec_format = "3.0"
package = "nnr"
version = "scm-1"
source = { url = "git+https://example.invalid/nnrun.git" }   -- luarocks make builds the checkout it runs in
description = {
  summary = "nnrun: a machine-learning runtime in C, scripted from LuaJIT",
  detailed = "Tensors, autograd, nn, optimizers, data loading and backends as plugins (cpu, cuda, int8), used from LuaJIT.",
  license = "MIT",
}
dependencies = { "lua == 5.1" }
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    -- the rock's folders, which luarocks deploys: lua/ to share/lua/5.1, lib/ to lib/lua/5.1, bin/ to bin
    NNR_INSTALL_LUADIR = "lua",
    CMAKE_INSTALL_LIBDIR = "lib",
    CMAKE_INSTALL_BINDIR = "bin",
    NNR_INSTALL_RPATH = "\\$ORIGIN/../lib/lua/5.1",      -- luarocks quotes with "": the shell keeps $ORIGIN
    NNR_BUILD_TESTS = "OFF",
    NNR_SOVERSION = "OFF",
  },
}
