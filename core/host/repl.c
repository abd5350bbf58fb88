/* nnrun's REPL: libedit's line editing and history (~/.nnrun_history), multi-line input, results
 * printed, Ctrl-C cancels the line at the prompt (nnrun.c's signal handler), and Tab completes the
 * word before the cursor with nnr.repl.complete (lua/nnr/repl.lua): names under tables and classes,
 * tensor and module methods after ':', globals and keywords. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <editline/readline.h>
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include "host/nnrun.h"

/* ---- Tab completion ---- */
static lua_State *complete_L;
static char **matches;
static int match_count, match_next;

static void drop_matches(void)
{
    for (int i = 0; i < match_count; i++) free(matches[i]);
    free(matches);
    matches = NULL;
    match_count = match_next = 0;
}

/* nnr.repl.complete(text) into matches; an error (or no nnr) completes nothing */
static void find_matches(const char *text)
{
    lua_State *L = complete_L;
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushstring(L, "nnr.repl");
    if (lua_pcall(L, 1, 1, 0) == 0 && lua_istable(L, -1)) {
        lua_getfield(L, -1, "complete");
        lua_pushstring(L, text);
        if (lua_pcall(L, 1, 1, 0) == 0 && lua_istable(L, -1)) {
            int n = (int)lua_objlen(L, -1);
            matches = n > 0 ? calloc((size_t)n, sizeof *matches) : NULL;
            for (int i = 1; matches && i <= n; i++) {
                lua_rawgeti(L, -1, i);
                const char *s = lua_tostring(L, -1);
                if (s && (matches[match_count] = strdup(s))) match_count++;
                lua_pop(L, 1);
            }
        }
    }
    lua_settop(L, top);
}

/* readline's generator: state 0 starts a new word; each call hands over one match (readline frees it) */
static char *next_completion(const char *text, int state)
{
    if (state == 0) {
        drop_matches();
        find_matches(text);
    }
    return match_next < match_count ? strdup(matches[match_next++]) : NULL;
}

static char **attempt_completion(const char *text, int start, int end)
{
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1;      /* names only, never file names */
    rl_completion_append_character = 0;   /* nnr.nn.Linear, then "(" or "." as the user goes on */
    return rl_completion_matches(text, next_completion);
}

/* ---- the loop ---- */
static int incomplete(lua_State *L, int status)
{
    if (status == LUA_ERRSYNTAX) {
        size_t len;
        const char *msg = lua_tolstring(L, -1, &len);
        if (len >= 7 && strcmp(msg + len - 7, "'<eof>'") == 0) { lua_pop(L, 1); return 1; }
    }
    return 0;
}

/* a line, or NULL at end of input; *cancelled is set when Ctrl-C ended the
 * prompt (libedit then returns NULL too): the caller drops the pending input */
static char *read_line(const char *prompt, int *cancelled)
{
    nnrun_prompt_interrupted = 0;
    nnrun_in_prompt = 1;
    char *line = readline(prompt);
    nnrun_in_prompt = 0;
    *cancelled = nnrun_prompt_interrupted;
    if (*cancelled) {
        free(line);
        printf("\n");
        return NULL;
    }
    return line;
}

static void print_results(lua_State *L, int base)
{
    int n = lua_gettop(L) - base;
    if (n <= 0) return;
    lua_getglobal(L, "print");
    lua_insert(L, base + 1);
    if (lua_pcall(L, n, 0, 0)) {
        fprintf(stderr, "error printing result: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

static char history_path[PATH_MAX];

/* A line's own locals would end with it (each line is a chunk), so `local m = nn.Linear(2, 3)` then
 * `m` would find nothing: a line that begins with `local` (`local function f` too) runs without the
 * word, so its first statement's names live on as globals, as a notebook's do, and Tab completes them.
 * Where the rest does not compile alone (`local x` with no value), or a name was a global when the REPL
 * started (`local type = ...`), the line runs as written. Returns 1 with the compiled chunk pushed, or 0
 * with nothing pushed. */
static int is_name_char(char c) { return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

/* 1 when name [p, p + n) was a global when the REPL started (Lua's and nnrun's own: print, table, type,
 * nnr...): such a local stays local, so that `local type = "gpt"` does not break every library using type */
static int was_global(lua_State *L, const char *p, size_t n)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "nnrun.repl_globals");
    lua_pushlstring(L, p, n);
    lua_rawget(L, -2);
    int was = !lua_isnil(L, -1);
    lua_pop(L, 2);
    return was;
}

static int load_promoted(lua_State *L, const char *chunk)
{
    const char *p = chunk;
    while (*p == ' ' || *p == '\t') p++;
    if (strncmp(p, "local", 5) != 0 || (p[5] != ' ' && p[5] != '\t')) return 0;
    const char *body = p + 6, *q = body;
    while (*q == ' ' || *q == '\t') q++;
    if (strncmp(q, "function", 8) == 0 && !is_name_char(q[8])) for (q += 8; *q == ' ' || *q == '\t'; q++) {}
    for (;;) {                          /* the names declared: name {, name} */
        const char *n0 = q;
        while (is_name_char(*q)) q++;
        if (q == n0 || was_global(L, n0, (size_t)(q - n0))) return 0;
        while (*q == ' ' || *q == '\t') q++;
        if (*q != ',') break;
        for (q++; *q == ' ' || *q == '\t'; q++) {}
    }
    if (luaL_loadbufferx(L, body, strlen(body), "=stdin", "t") == 0) return 1;
    lua_pop(L, 1);
    return 0;
}

/* the names of the globals as the REPL starts (what load_promoted keeps local) */
static void snapshot_globals(lua_State *L)
{
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, LUA_GLOBALSINDEX)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING) { lua_pushvalue(L, -1); lua_pushboolean(L, 1); lua_rawset(L, -4); }
    }
    lua_pushstring(L, "nnr");           /* (loaded on first use, so maybe not yet a key) */
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_setfield(L, LUA_REGISTRYINDEX, "nnrun.repl_globals");
}

void nnrun_repl(lua_State *L)
{
    const char *home = getenv("HOME");
    if (home) {
        snprintf(history_path, sizeof history_path, "%s/.nnrun_history", home);
        read_history(history_path);
    }
    complete_L = L;
    snapshot_globals(L);
    rl_attempted_completion_function = attempt_completion;
    rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{}()[],+-*/%^~#";
    printf("nnrun %s (%s). nnr is loaded; Ctrl-D exits, Ctrl-C stops a computation.\n", nnr_version(), LUAJIT_VERSION);
    for (;;) {
        int cancelled;
        char *line = read_line("> ", &cancelled);
        if (cancelled) continue;
        if (!line) break;
        size_t cap = strlen(line) + 1;
        char *chunk = malloc(cap);
        if (!chunk) { free(line); break; }
        memcpy(chunk, line, cap);
        free(line);
        if (chunk[0] == '=') chunk[0] = ' ';   /* Lua 5.1 habit: =expr prints */
        int base = lua_gettop(L);
        int status = 1;
        for (;;) {
            /* first as an expression, so `t` prints t */
            char *expr = malloc(strlen(chunk) + 8);
            if (!expr) break;
            sprintf(expr, "return %s", chunk);
            status = luaL_loadbufferx(L, expr, strlen(expr), "=stdin", "t");
            free(expr);
            if (status == 0) break;
            lua_pop(L, 1);
            status = luaL_loadbufferx(L, chunk, strlen(chunk), "=stdin", "t");
            if (!incomplete(L, status)) break;
            char *more = read_line(">> ", &cancelled);
            if (!more) { status = -1; break; }      /* Ctrl-C or end of input: drop the statement */
            size_t nl = strlen(chunk) + strlen(more) + 2;
            char *joined = malloc(nl);
            if (!joined) { free(more); break; }
            snprintf(joined, nl, "%s\n%s", chunk, more);
            free(more);
            free(chunk);
            chunk = joined;
        }
        if (chunk[0]) add_history(chunk);
        if (status == 0 && load_promoted(L, chunk)) lua_remove(L, -2);    /* the line without `local` */
        if (status == 0) {
            if (nnrun_docall(L, 0, LUA_MULTRET) == 0) print_results(L, base);
        } else if (status != -1 && lua_gettop(L) > base) {
            fprintf(stderr, "%s\n", lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        lua_settop(L, base);
        free(chunk);
    }
    printf("\n");
    if (history_path[0]) write_history(history_path);
}

