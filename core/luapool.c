/* Per-worker LuaJIT states for datasets, transforms and collate functions
 * written in Lua (DESIGN.md decision 8, after Torch7's threads). Each loader
 * slot gets its own lua_State, created on first use by the worker thread
 * that needs it and used by one thread at a time (the loader hands out
 * slots). A state runs the bootstrap chunk with the serialized dataset; the
 * chunk returns the state's batch function. Tensors cross by pointer and
 * refcount: the pool holds one reference to each tensor the payload names,
 * a state takes its own, and a built batch comes back as new references. */
#include <lauxlib.h>
#include <lualib.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

enum { MAX_STATES = 65 };

struct nnr_lua_pool {
    int nstates;
    lua_State *states[MAX_STATES];
    int fn_ref[MAX_STATES];
    char *bootstrap, *payload;
    size_t payload_len;
    nnr_tensor **tensors;
    int ntensors;
    nnr_dataset **datasets;
    int ndatasets;
};

nnr_lua_pool *nnr_lua_pool_new(int nstates, const char *bootstrap, const char *payload, size_t payload_len,
                               nnr_tensor *const *tensors, int ntensors, nnr_dataset *const *datasets, int ndatasets)
{
    if (nstates < 1 || nstates > MAX_STATES - 1 || ntensors < 0 || ndatasets < 0) {
        nnr_errorf(NNR_ERR_INVALID, "DataLoader: Lua worker states: 1..%d (got %d)", MAX_STATES - 1, nstates);
        return NULL;
    }
    nnr_lua_pool *p = calloc(1, sizeof *p);
    if (!p) { nnr_errorf(NNR_ERR_OOM, "DataLoader: out of memory"); return NULL; }
    p->nstates = nstates;
    p->bootstrap = strdup(bootstrap);
    p->payload = malloc(payload_len + 1);
    p->tensors = calloc((size_t)ntensors + 1, sizeof *p->tensors);
    p->datasets = calloc((size_t)ndatasets + 1, sizeof *p->datasets);
    if (!p->bootstrap || !p->payload || !p->tensors || !p->datasets) {
        free(p->bootstrap); free(p->payload); free(p->tensors); free(p->datasets); free(p);
        nnr_errorf(NNR_ERR_OOM, "DataLoader: out of memory");
        return NULL;
    }
    memcpy(p->payload, payload, payload_len);
    p->payload_len = payload_len;
    for (int i = 0; i < ntensors; i++) {
        nnr_tensor_retain(tensors[i]);
        p->tensors[i] = tensors[i];
    }
    p->ntensors = ntensors;
    for (int i = 0; i < ndatasets; i++) {
        nnr_dataset_retain(datasets[i]);
        p->datasets[i] = datasets[i];
    }
    p->ndatasets = ndatasets;
    return p;
}

/* the state of a slot, created on first use; NULL with err set */
static lua_State *state_for(nnr_lua_pool *p, int slot, char *err, size_t errn)
{
    if (p->states[slot]) return p->states[slot];
    lua_State *L = luaL_newstate();
    if (!L) { snprintf(err, errn, "cannot create a Lua worker state (out of memory)"); return NULL; }
    luaL_openlibs(L);
    if (luaL_loadbuffer(L, p->bootstrap, strlen(p->bootstrap), "=nnr.data.worker") != 0) goto fail;
    lua_pushlstring(L, p->payload, p->payload_len);
    lua_pushlightuserdata(L, p->tensors);
    lua_pushinteger(L, p->ntensors);
    lua_pushinteger(L, slot);
    lua_pushlightuserdata(L, p->datasets);
    lua_pushinteger(L, p->ndatasets);
    if (lua_pcall(L, 6, 1, 0) != 0) goto fail;
    if (!lua_isfunction(L, -1)) { lua_pushstring(L, "the worker bootstrap did not return a function"); goto fail; }
    p->fn_ref[slot] = luaL_ref(L, LUA_REGISTRYINDEX);
    p->states[slot] = L;
    return L;
fail:
    snprintf(err, errn, "starting a Lua worker: %s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "error");
    lua_close(L);
    return NULL;
}

int nnr_lua_pool_batch(void *ctx, int slot, int64_t epoch, int64_t batch, const int64_t *samples, int64_t count,
                       nnr_tensor **x, nnr_tensor **y, char *err, size_t errn)
{
    nnr_lua_pool *p = ctx;
    nnr_tensor *out[2] = {NULL, NULL};
    *x = *y = NULL;
    if (slot < 0 || slot >= MAX_STATES - 1) { snprintf(err, errn, "worker slot %d out of range", slot); return NNR_ERR_INTERNAL; }
    lua_State *L = state_for(p, slot, err, errn);
    if (!L) return NNR_ERR_INVALID;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->fn_ref[slot]);
    lua_pushlightuserdata(L, (void *)samples);
    lua_pushnumber(L, (lua_Number)count);
    lua_pushnumber(L, (lua_Number)epoch);
    lua_pushnumber(L, (lua_Number)batch);
    lua_pushlightuserdata(L, out);
    int st = NNR_OK;
    if (lua_pcall(L, 5, 1, 0) != 0 || !lua_isnil(L, -1)) {
        snprintf(err, errn, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "a Lua worker failed");
        st = NNR_ERR_INVALID;
    }
    lua_settop(L, 0);
    if (st) { nnr_tensor_release(out[0]); nnr_tensor_release(out[1]); return st; }
    *x = out[0];
    *y = out[1];
    return NNR_OK;
}

void nnr_lua_pool_free(void *ctx)
{
    nnr_lua_pool *p = ctx;
    if (!p) return;
    for (int i = 0; i < MAX_STATES; i++)
        if (p->states[i]) lua_close(p->states[i]);
    for (int i = 0; i < p->ntensors; i++) nnr_tensor_release(p->tensors[i]);
    free(p->tensors);
    for (int i = 0; i < p->ndatasets; i++) nnr_dataset_release(p->datasets[i]);
    free(p->datasets);
    free(p->bootstrap);
    free(p->payload);
    free(p);
}
