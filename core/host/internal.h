/* Private to libnnr: the host part (LuaJIT states, DataParallel's replicas, MPI). */
#ifndef NNR_HOST_INTERNAL_H
#define NNR_HOST_INTERNAL_H

#include <lua.h>
#include "nnr/host.h"
#include "data/internal.h"

#pragma GCC visibility push(hidden)

/* state k of the set (created now by the calling thread if it is new) and the registry reference of
 * its function, or NULL with err set */
lua_State *nnr_lua_states_get(nnr_lua_states *s, int k, int *fn_ref, char *err, size_t errn);
int nnr_lua_states_count(const nnr_lua_states *s);

#pragma GCC visibility pop
#endif
