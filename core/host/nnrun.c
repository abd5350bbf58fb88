/* nnrun: runs Lua scripts with the nnr package, or opens the REPL.
 *
 *   nnrun script.lua [args]   run a script (it sees arg)
 *   nnrun -e 'code'           run a snippet
 *   nnrun -i script.lua       run, then the REPL
 *   nnrun                     the REPL (stdin not a terminal: run stdin)
 *
 * Ctrl-C sets the core's interrupt flag (the next op fails with
 * "interrupted") and a Lua hook (interpreted code stops at the next
 * instruction count), so both op loops and long kernels return to the prompt.
 *
 * A script that stops gracefully (a training loop that finishes its step and
 * writes a checkpoint) calls nnr.signals.catch_stop(): then the first SIGINT or
 * SIGTERM only records the signal, which the script polls with
 * nnr.signals.stop_requested(); a second one interrupts as Ctrl-C does. nnrun
 * then exits with 128 + the signal (130, 143), as shells report a process a
 * signal stopped. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include "host/nnrun.h"

static lua_State *globalL;
volatile sig_atomic_t nnrun_in_prompt, nnrun_prompt_interrupted;   /* repl.c reads a line meanwhile */
/* graceful stops: catching_stop while a script asked for them; stop_signal the first signal caught */
static volatile sig_atomic_t catching_stop, stop_signal;

/* The hook raises only while a Lua function outside the nnr package runs. In
 * the package (or in a C function such as the FFI's metamethod dispatch) a new
 * tensor can sit between the C call that made it and the ffi.gc that owns it,
 * and raising there would leak it; ops in there still fail on the core's flag. */
static int unsafe_point(lua_State *L)
{
    lua_Debug d;
    if (!lua_getstack(L, 0, &d) || !lua_getinfo(L, "S", &d)) return 0;
    if (strcmp(d.what, "C") == 0) return 1;
    return d.source[0] == '@' && (strstr(d.source, "/lua/nnr/") || strstr(d.source, "/lua/5.1/nnr/"));
}

static void lstop(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    if (unsafe_point(L)) return;                     /* the hook stays armed */
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted");
}

static void interrupt_now(void)
{
    nnr_interrupt();
    if (globalL) lua_sethook(globalL, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* SIGINT always; SIGTERM while a script catches stops. Only async-signal-safe calls in here. */
static void on_signal(int sig)
{
    if (nnrun_in_prompt) {
        if (sig == SIGINT) { nnrun_prompt_interrupted = 1; return; }
        signal(sig, SIG_DFL);                        /* SIGTERM at the prompt: end as if uncaught */
        raise(sig);
        return;
    }
    if (catching_stop && !stop_signal) { stop_signal = sig; return; }   /* the script stops at its next check */
    interrupt_now();                                 /* not caught, or a second signal: stop now */
}

static void set_handler(int sig, void (*fn)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(sig, &sa, NULL);
}

static void install_sigint(void) { set_handler(SIGINT, on_signal); }

/* nnr.native.catch_stop(on): the first SIGINT or SIGTERM is recorded for the script to poll instead of
 * interrupting it (SIGTERM is caught only meanwhile); returns whether stops were caught before */
static int native_catch_stop(lua_State *L)
{
    int on = lua_isnoneornil(L, 1) || lua_toboolean(L, 1);
    int was = catching_stop != 0;
    if (on && !was) { catching_stop = 1; set_handler(SIGTERM, on_signal); }
    if (!on && was) { catching_stop = 0; set_handler(SIGTERM, SIG_DFL); }
    lua_pushboolean(L, was);
    return 1;
}

static const char *signal_name(int sig) { return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "signal"; }

/* nnr.native.stop_signal(): nil, or the caught signal's name and the exit status it gives (128 + number) */
static int native_stop_signal(lua_State *L)
{
    int sig = stop_signal;
    if (!sig) { lua_pushnil(L); return 1; }
    lua_pushstring(L, signal_name(sig));
    lua_pushinteger(L, 128 + sig);
    return 2;
}

/* nnr.native.clear_stop(): forgets a caught signal (nnrun then exits as the script decides) */
static int native_clear_stop(lua_State *L)
{
    (void)L;
    stop_signal = 0;
    return 0;
}

/* "@<prefix>/share/lua/5.1/nnr/": the source of nnr's own Lua frames (set_paths) */
static char nnr_source_root[PATH_MAX + 32];

/* a frame of nnrun's own: nnr's Lua modules, or nnrun's glue chunks */
static int internal_source(const char *source)
{
    if (strcmp(source, "=nnrun") == 0) return 1;
    size_t n = strlen(nnr_source_root);
    return n > 0 && strncmp(source, nnr_source_root, n) == 0;
}

/* 1: every frame (NNR_TRACEBACK=full); 0: the user's frames. Another value is named once. */
static int full_traceback(void)
{
    static int full = -1;
    if (full < 0) {
        const char *env = getenv("NNR_TRACEBACK");
        full = env && strcmp(env, "full") == 0;
        if (env && env[0] && !full) fprintf(stderr, "nnrun: NNR_TRACEBACK=%.40s is not 'full'; tracebacks show your frames only\n", env);
    }
    return full;
}

/* the deepest level of L's stack (exponential, then binary search: lua_getstack is linear in the level) */
static int stack_depth(lua_State *L)
{
    lua_Debug ar;
    int lo = 1, hi = 1;
    while (lua_getstack(L, hi, &ar)) { lo = hi; hi *= 2; }
    while (hi - lo > 1) { int m = (lo + hi) / 2; if (lua_getstack(L, m, &ar)) lo = m; else hi = m; }
    return lua_getstack(L, 1, &ar) ? lo : 0;
}

/* luaL_traceback's lines without nnrun's own frames: nnr's Lua frames, and C frames called from them
 * (error, pcall) or from nnrun itself (the outermost); a last line says how many were left out. A deep
 * stack shows its first 12 levels and its last 10, as luaL_traceback does. */
static void user_traceback(lua_State *L, const char *msg)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, msg);
    luaL_addstring(&b, "\nstack traceback:");
    lua_Debug ar, up;
    int hidden = 0, shown = 0, depth = stack_depth(L);
    for (int level = 1; level <= depth; level++) {
        if (depth > 22 && level == 13) {
            char line[64];
            snprintf(line, sizeof line, "\n\t...\t(%d levels skipped)", depth - 22);
            luaL_addstring(&b, line);
            level = depth - 9;
        }
        if (!lua_getstack(L, level, &ar)) break;
        lua_getinfo(L, "Sln", &ar);
        int skip = internal_source(ar.source);
        if (!skip && ar.what[0] == 'C') {
            if (!lua_getstack(L, level + 1, &up)) continue;          /* nnrun's call of the chunk: not a frame of the user's */
            lua_getinfo(L, "S", &up);
            skip = internal_source(up.source);
        }
        if (skip) { hidden++; continue; }
        shown++;
        char line[LUA_IDSIZE + 128];
        int len = snprintf(line, sizeof line, "\n\t%s:", ar.short_src);
        if (ar.currentline > 0) len += snprintf(line + len, sizeof line - len, "%d:", ar.currentline);
        if (ar.namewhat[0]) snprintf(line + len, sizeof line - len, " in function '%s'", ar.name);
        else if (ar.what[0] == 'm') snprintf(line + len, sizeof line - len, " in main chunk");
        else if (ar.what[0] == 'C') snprintf(line + len, sizeof line - len, " in ?");
        else snprintf(line + len, sizeof line - len, " in function <%s:%d>", ar.short_src, ar.linedefined);
        luaL_addstring(&b, line);
    }
    if (hidden && shown) {
        char line[96];
        snprintf(line, sizeof line, "\n\t(%d frame%s of nnrun's own left out; NNR_TRACEBACK=full shows them)", hidden, hidden == 1 ? "" : "s");
        luaL_addstring(&b, line);
    }
    luaL_pushresult(&b);
    if (!shown) {                          /* none of the user's: the message alone (a tool's error, as `nnrun plot`) */
        lua_pop(L, 1);
        lua_pushstring(L, msg);
    }
}

static int traceback(lua_State *L)
{
    if (lua_isnil(L, 1)) return 1;
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_isstring(L, -1)) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    if (full_traceback()) luaL_traceback(L, L, msg, 1);
    else user_traceback(L, msg);
    return 1;
}

/* runs the function on top of the stack with n args; prints errors */
int nnrun_docall(lua_State *L, int nargs, int nresults)
{
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    int status = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    lua_sethook(L, NULL, 0, 0);
    if (status != 0) {
        nnr_clear_interrupt();
        /* error() with no value (busted's way to exit non-zero) prints nothing */
        const char *msg = lua_isnil(L, -1) ? NULL : lua_tostring(L, -1);
        if (msg) fprintf(stderr, "%s\n", msg);
        fflush(stderr);
        lua_pop(L, 1);
    }
    return status;
}

/* A lua_CFunction finalizer for tensor handles. LuaJIT calls a finalizer
 * from the GC; an FFI function there goes through the slow generic call path
 * (about 0.3 us), a plain C function does not. lua_topointer gives the cdata
 * payload, here the nnr_tensor pointer. */
static int native_release(lua_State *L)
{
    nnr_tensor *const *slot = (nnr_tensor *const *)lua_topointer(L, 1);
    if (slot) nnr_tensor_release(*slot);
    return 0;
}

/* the pointer held in a cdata, as a number: lets the Lua side check the trick above works */
static int native_address(lua_State *L)
{
    void *const *slot = (void *const *)lua_topointer(L, 1);
    lua_pushnumber(L, slot ? (lua_Number)(uintptr_t)*slot : -1);
    return 1;
}

static int open_native(lua_State *L)
{
    lua_createtable(L, 0, 6);
    lua_pushcfunction(L, native_catch_stop);
    lua_setfield(L, -2, "catch_stop");
    lua_pushcfunction(L, native_stop_signal);
    lua_setfield(L, -2, "stop_signal");
    lua_pushcfunction(L, native_clear_stop);
    lua_setfield(L, -2, "clear_stop");
    lua_pushcfunction(L, native_release);
    lua_setfield(L, -2, "release");
    lua_pushcfunction(L, native_address);
    lua_setfield(L, -2, "address");
    lua_pushcfunction(L, traceback);            /* the user's frames only (NNR_TRACEBACK): the Jupyter kernel's errors */
    lua_setfield(L, -2, "traceback");
    return 1;
}

static void set_paths(lua_State *L)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) return;
    *slash = 0;                                  /* <prefix>/bin */
    slash = strrchr(exe, '/');
    if (slash) *slash = 0;                       /* <prefix> */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *old = lua_tostring(L, -1);
    lua_pushfstring(L, "%s/share/lua/5.1/?.lua;%s/share/lua/5.1/?/init.lua;%s", exe, exe, old ? old : "");
    snprintf(nnr_source_root, sizeof nnr_source_root, "@%s/share/lua/5.1/nnr/", exe);
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

static int preload_nnr(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushstring(L, "nnr");
    if (nnrun_docall(L, 1, 1)) return 1;
    lua_setglobal(L, "nnr");
    return 0;
}

/* -e, scripts and -: the global nnr is loaded on its first use, as the REPL has it, so that a snippet
 * that works in one works in the others, and code that does not touch it starts nothing
 * (loading nnr counts the backends and parses its Lua modules: most of nnrun's start-up). A script that
 * sets its own metatable on _G first takes the global from require "nnr" itself. */
static int lazy_nnr(lua_State *L)
{
    static const char code[] =
        "setmetatable(_G, {__index = function(g, k)\n"
        "  if k ~= 'nnr' then return nil end\n"
        "  setmetatable(g, nil)\n"
        "  local m = require 'nnr'\n"
        "  rawset(g, 'nnr', m)\n"
        "  return m\n"
        "end})";
    if (luaL_loadbuffer(L, code, sizeof code - 1, "=nnrun") != 0) {
        fprintf(stderr, "nnrun: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return 1;
    }
    return nnrun_docall(L, 0, 0);
}

static void make_arg(lua_State *L, char **argv, int argc, int script)
{
    lua_createtable(L, argc, 2);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

/* the load error, said plainly when the chunk was bytecode (LuaJIT's "wrong mode") */
static void report_load_error(lua_State *L, const char *what)
{
    const char *msg = lua_tostring(L, -1);
    if (msg && strstr(msg, "wrong mode"))
        fprintf(stderr, "nnrun: %s is precompiled bytecode; nnrun runs Lua source only (LuaJIT does not verify bytecode, and a "
                "damaged file could crash the process)\n", what);
    else fprintf(stderr, "nnrun: %s\n", msg ? msg : "cannot load the chunk");
    lua_pop(L, 1);
}

static int run_file(lua_State *L, const char *path, char **argv, int argc, int script)
{
    make_arg(L, argv, argc, script);
    /* source only ("t"): LuaJIT does not verify bytecode, and a corrupt precompiled file reads
     * uninitialised memory or crashes the loader (valgrind over the hostile suite showed it) */
    if (luaL_loadfilex(L, path, "t")) {
        report_load_error(L, path);
        return 1;
    }
    int nargs = 0;
    for (int i = script + 1; i < argc; i++, nargs++) lua_pushstring(L, argv[i]);
    return nnrun_docall(L, nargs, 0);
}

static int run_string(lua_State *L, const char *code, const char *name)
{
    if (luaL_loadbufferx(L, code, strlen(code), name, "t")) {
        report_load_error(L, "the code given");
        return 1;
    }
    return nnrun_docall(L, 0, 0);
}

static int run_stdin(lua_State *L)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len, stdin)) > 0) {
        len += got;
        if (len == cap) { char *nb = realloc(buf, cap *= 2); if (!nb) { free(buf); buf = NULL; } else buf = nb; }
    }
    if (!buf) { fprintf(stderr, "nnrun: out of memory reading stdin\n"); return 1; }
    if (luaL_loadbufferx(L, buf, len, "=stdin", "t")) {
        report_load_error(L, "stdin");
        free(buf);
        return 1;
    }
    free(buf);
    return nnrun_docall(L, 0, 0);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: nnrun [options] [script.lua [args...]]\n"
            "  script.lua args   run a Lua script; it sees its arguments in arg\n"
            "  -e code           run code (the global nnr is loaded on first use)\n"
            "  -i                open the REPL after running the script or -e code\n"
            "  -                 run standard input\n"
            "  --profile[=trace.json]\n"
            "                    profile the whole run: a table by op and by module on stderr at the end,\n"
            "                    and a Chrome trace (chrome://tracing, Perfetto) when a path is given\n"
            "  --plugins         list plugins, devices and any refusals\n"
            "  --check-backend lib.so [--ops PATTERN]\n"
            "                    load a backend plugin and check every op on its devices against the host backend,\n"
            "                    one row per op, dtype and layout (PATTERN: a Lua pattern for the op names)\n"
            "  --install-kernel [--user | --prefix DIR] [--name NAME] [--python PY] [--replace]\n"
            "                    register nnrun as a Jupyter kernel (a wrapper on pip's ipykernel)\n"
            "  plot metrics.jsonl [-o curves.png|svg]\n"
            "                    draw a training run's curves (gnuplot): one panel per metric, the learning rate on its own axis\n"
            "  --version         print versions\n"
            "  --help            this text\n"
            "With no script, nnrun opens the REPL (or runs stdin when it is not a terminal).\n"
            "Environment: NNR_PLUGIN_PATH (more plugin folders or .so files), NNR_NUM_THREADS, NNR_LOG (0-3).\n");
}

static int list_plugins(void)
{
    nnr_init();
    printf("plugins:\n");
    for (int i = 0; i < nnr_plugin_count(); i++) {
        int kind = nnr_plugin_kind_of(i), abi = nnr_plugin_abi(i);
        char what[64] = "";
        if (kind >= 0) snprintf(what, sizeof what, " (%s, ABI %d.%d, %d device%s)", kind == NNR_PLUGIN_BACKEND ? "backend" : "extension",
                                abi >> 16, abi & 0xffff, nnr_plugin_device_count(i), nnr_plugin_device_count(i) == 1 ? "" : "s");
        printf("  %-8s %-8s %s%s\n           %s: %s\n", nnr_plugin_name(i), nnr_plugin_version(i), nnr_plugin_path(i), what,
               nnr_plugin_loaded(i) ? "loaded" : "REFUSED", nnr_plugin_message(i));
    }
    printf("devices:\n");
    for (int d = 0; d < nnr_device_count(); d++) {
        int64_t free_b, total_b;
        char mem[64] = "";
        if (nnr_device_memory_info(d, &free_b, &total_b) == NNR_OK && total_b > 0)
            snprintf(mem, sizeof mem, "; memory %.1f GiB free of %.1f", free_b >= 0 ? (double)free_b / (1 << 30) : 0.0, (double)total_b / (1 << 30));
        printf("  %-8s %s%s%s\n", nnr_device_name(d), nnr_device_label(d), nnr_device_host_memory(d) ? " (host memory)" : "", mem);
    }
    if (nnr_device_count() == 0) printf("  none: %s\n", nnr_last_error());
    return nnr_device_count() > 0 ? 0 : 1;
}

/* a Lua state with the standard libraries, our package path and nnr.native */
lua_State *nnrun_new_state(void)
{
    lua_State *L = luaL_newstate();
    if (!L) { fprintf(stderr, "nnrun: cannot create a Lua state\n"); return NULL; }
    luaL_openlibs(L);
    set_paths(L);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, open_native);
    lua_setfield(L, -2, "nnr.native");
    lua_pop(L, 2);
    return L;
}

/* --profile: starts the profiler before the code and reports after it, even when it failed */
static int profile_run(lua_State *L, int stop, const char *trace)
{
    static const char start_code[] = "require('nnr.profiler').start()";
    static const char stop_code[] =
        "local trace = ...\n"
        "local prof = require('nnr.profiler').stop()\n"
        "io.stderr:write(prof:table(), '\\n')\n"
        "if trace then prof:write_trace(trace); io.stderr:write('trace written to ', trace, '\\n') end";
    const char *code = stop ? stop_code : start_code;
    int top = lua_gettop(L);
    int status = luaL_loadbuffer(L, code, strlen(code), stop ? "=--profile" : "=--profile");
    if (status == 0) {
        if (trace && *trace) lua_pushstring(L, trace);
        else lua_pushnil(L);
        status = nnrun_docall(L, 1, 0);
    }
    lua_settop(L, top);
    return status;
}

/* nnrun plot ...: a tool written in Lua (lua/nnr/plot.lua), its arguments as a table */
static int run_tool(const char *module, int argc, char **argv)
{
    lua_State *L = nnrun_new_state();
    if (!L) return 1;
    globalL = L;
    install_sigint();
    int status = 1;
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    if (nnrun_docall(L, 1, 1) == 0) {
        lua_getfield(L, -1, "main");
        lua_createtable(L, argc, 0);
        for (int i = 0; i < argc; i++) {
            lua_pushstring(L, argv[i]);
            lua_rawseti(L, -2, i + 1);
        }
        status = nnrun_docall(L, 1, 0);
    }
    lua_close(L);
    return status ? 1 : 0;
}

static int run_main(int argc, char **argv);

/* nnrun plot ... is a tool; anything else is a script, code or the REPL */
int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "plot") == 0) return run_tool("nnr.plot", argc - 2, argv + 2);
    if (argc >= 2 && (strcmp(argv[1], "--install-kernel") == 0 || strcmp(argv[1], "--kernel-server") == 0))
        return run_tool("nnr.jupyter", argc - 1, argv + 1);
    return run_main(argc, argv);
}

static int run_main(int argc, char **argv)
{
    int interactive = 0, script = 0, ran_code = 0, profile = 0;
    const char *trace = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-e") == 0) { i++; continue; }
        if (argv[i][0] != '-' || strcmp(argv[i], "-") == 0) break;     /* the script's own arguments follow */
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) { usage(stdout); return 0; }
        if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-v") == 0) {
            printf("nnrun %s (%s, plugin ABI %d.%d)\n", nnr_version(), LUAJIT_VERSION, NNR_ABI_MAJOR, NNR_ABI_MINOR);
            return 0;
        }
        if (strcmp(argv[i], "--plugins") == 0) return list_plugins();
        if (strcmp(argv[i], "--check-backend") == 0) {
            if (i + 1 >= argc) { fprintf(stderr, "nnrun: --check-backend needs a plugin library\n"); return 1; }
            const char *ops = NULL;
            if (i + 2 < argc && strcmp(argv[i + 2], "--ops") == 0) {
                if (i + 3 >= argc) { fprintf(stderr, "nnrun: --ops needs a pattern (a Lua pattern matched against op names)\n"); return 1; }
                ops = argv[i + 3];
            }
            return nnrun_check_backend(argv[i + 1], ops);
        }
    }
    lua_State *L = nnrun_new_state();
    if (!L) return 1;
    globalL = L;
    install_sigint();

    int status = 0;
    int i = 1;
    for (; i < argc && status == 0; i++) {
        if (strncmp(argv[i], "--profile", 9) == 0 && (argv[i][9] == 0 || argv[i][9] == '=')) {
            profile = 1;
            trace = argv[i][9] == '=' ? argv[i] + 10 : NULL;
            if (preload_nnr(L) || profile_run(L, 0, NULL)) { status = 1; break; }
            continue;
        }
        if (strcmp(argv[i], "-e") == 0) {
            if (i + 1 >= argc) { fprintf(stderr, "nnrun: -e needs an argument\n"); usage(stderr); return 1; }
            if (!ran_code && lazy_nnr(L)) { status = 1; break; }
            make_arg(L, argv, argc, 0);
            status = run_string(L, argv[++i], "=(command line)");
            ran_code = 1;
        } else if (strcmp(argv[i], "-i") == 0) {
            interactive = 1;
        } else if (strcmp(argv[i], "-") == 0) {
            if (!ran_code && lazy_nnr(L)) { status = 1; break; }
            status = run_stdin(L);
            ran_code = 1;
            i++;
            break;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "nnrun: unknown option %s\n", argv[i]);
            usage(stderr);
            lua_close(L);
            return 1;
        } else {
            script = i;
            if (!ran_code && lazy_nnr(L)) { status = 1; break; }
            status = run_file(L, argv[i], argv, argc, script);
            ran_code = 1;
            break;
        }
    }
    if (profile && profile_run(L, 1, trace)) status = 1;
    if (status == 0 && (interactive || !ran_code)) {
        if (!ran_code && !interactive && !isatty(0)) {
            status = preload_nnr(L) ? 1 : run_stdin(L);
        } else {
            if (preload_nnr(L) == 0) nnrun_repl(L);
        }
    }
    fflush(stdout);
    /* a rank of an MPI job whose script failed takes the job down, so that the other ranks stop with
     * a message naming it instead of waiting for it in a collective */
    if (status && nnr_dist_initialized()) nnr_dist_abort(1);
    lua_close(L);
    if (!status) nnr_dist_finalize();
    /* a script that caught a stop (SIGINT, SIGTERM) ends with the status a shell gives a process the
     * signal stopped: 130, 143, whether it returned or failed after the signal */
    if (stop_signal) return 128 + stop_signal;
    return status ? 1 : 0;
}
