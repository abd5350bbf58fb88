/* Shared by the files of the nnrun executable (nnrun.c, conformance.c); not part of libnnr. */
#ifndef NNRUN_H
#define NNRUN_H

#include <lua.h>
#include "nnr/nnr.h"

/* a Lua state with the standard libraries, the package path and nnr.native */
lua_State *nnrun_new_state(void);
/* runs the function on top of the stack with nargs arguments; prints errors; 0 when it succeeded */
int nnrun_docall(lua_State *L, int nargs, int nresults);
/* the REPL on stdin (repl.c): line editing, history, Tab completion (nnr.repl), until end of input */
void nnrun_repl(lua_State *L);
/* set while repl.c waits for a line: SIGINT then only cancels the line (nnrun.c's handler) */
#include <signal.h>
extern volatile sig_atomic_t nnrun_in_prompt, nnrun_prompt_interrupted;
/* nnrun --check-backend: the conformance kit on the plugin at path (ops: a Lua pattern, or NULL) */
int nnrun_check_backend(const char *path, const char *ops);

#endif
