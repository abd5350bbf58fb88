/* The one pool of LuaJIT states that run Lua code beside the script (DESIGN.md decisions 8 and 9,
 * after Torch7's threads): the loader's workers (datasets, transforms and collate functions
 * written in Lua) and DataParallel's replicas. State k is created on first use by the thread that
 * needs it, and used by one thread at a time (the loader hands out slots; a replica has its own
 * thread). It runs the bootstrap chunk with its payload (lua/nnr/data/serial.lua) and keeps the
 * function the chunk returns. Tensors cross by pointer and refcount: the set holds one reference
 * to each tensor and dataset the payloads name, a state takes its own, and what a state builds
 * comes back as new references. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>
#include "host/internal.h"

enum { MAX_STATES = 64 };

struct nnr_lua_states {
    int n, npayloads;
    char *name, *bootstrap;
    char **payloads;
    size_t *lens;
    int *first, *count;              /* payload k's tensors: tensors[first[k] .. first[k] + count[k]) */
    nnr_tensor **tensors;
    int ntensors;
    nnr_dataset **datasets;
    int ndatasets;
    lua_State *states[MAX_STATES];
    int fn_ref[MAX_STATES];
};

static char *copy_bytes(const char *s, size_t n)
{
    char *c = malloc(n + 1);
    if (c) { memcpy(c, s, n); c[n] = 0; }
    return c;
}

static int take_payloads(nnr_lua_states *s, int npayloads, const char *const *payloads, const size_t *lens, const int *ntensors)
{
    s->npayloads = npayloads;
    s->payloads = calloc((size_t)npayloads, sizeof *s->payloads);
    s->lens = calloc((size_t)npayloads, sizeof *s->lens);
    s->first = calloc((size_t)npayloads, sizeof *s->first);
    s->count = calloc((size_t)npayloads, sizeof *s->count);
    if (!s->payloads || !s->lens || !s->first || !s->count) return NNR_ERR_OOM;
    for (int k = 0; k < npayloads; k++) {
        if (ntensors[k] < 0) return nnr_errorf(NNR_ERR_INVALID, "Lua states: payload %d names %d tensors", k + 1, ntensors[k]);
        s->lens[k] = lens[k];
        s->first[k] = s->ntensors;
        s->count[k] = ntensors[k];
        s->ntensors += ntensors[k];
        if (!(s->payloads[k] = copy_bytes(payloads[k], lens[k]))) return NNR_ERR_OOM;
    }
    return NNR_OK;
}

nnr_lua_states *nnr_lua_states_new(int nstates, const char *name, const char *bootstrap, int npayloads, const char *const *payloads,
                                   const size_t *lens, nnr_tensor *const *tensors, const int *ntensors, nnr_dataset *const *datasets,
                                   int ndatasets)
{
    if (nstates < 1 || nstates > MAX_STATES || (npayloads != 1 && npayloads != nstates) || ndatasets < 0) {
        nnr_errorf(NNR_ERR_INVALID, "Lua states: 1..%d states with one payload or one each (got %d states, %d payloads)", MAX_STATES,
                   nstates, npayloads);
        return NULL;
    }
    nnr_lua_states *s = calloc(1, sizeof *s);
    if (!s) { nnr_errorf(NNR_ERR_OOM, "Lua states: out of memory"); return NULL; }
    s->n = nstates;
    s->name = strdup(name);
    s->bootstrap = strdup(bootstrap);
    int st = s->name && s->bootstrap ? take_payloads(s, npayloads, payloads, lens, ntensors) : NNR_ERR_OOM;
    if (st == NNR_OK) {
        s->tensors = calloc((size_t)s->ntensors + 1, sizeof *s->tensors);
        s->datasets = calloc((size_t)ndatasets + 1, sizeof *s->datasets);
        if (!s->tensors || !s->datasets) st = NNR_ERR_OOM;
    }
    if (st) {
        if (st == NNR_ERR_OOM) nnr_errorf(NNR_ERR_OOM, "Lua states: out of memory");
        nnr_lua_states_free(s);
        return NULL;
    }
    for (int i = 0; i < s->ntensors; i++) { nnr_tensor_retain(tensors[i]); s->tensors[i] = tensors[i]; }
    for (int i = 0; i < ndatasets; i++) { nnr_dataset_retain(datasets[i]); s->datasets[i] = datasets[i]; }
    s->ndatasets = ndatasets;
    return s;
}

int nnr_lua_states_count(const nnr_lua_states *s) { return s->n; }

lua_State *nnr_lua_states_get(nnr_lua_states *s, int k, int *fn_ref, char *err, size_t errn)
{
    if (k < 0 || k >= s->n) { snprintf(err, errn, "Lua state %d out of range 0..%d", k, s->n - 1); return NULL; }
    if (s->states[k]) { *fn_ref = s->fn_ref[k]; return s->states[k]; }
    lua_State *L = luaL_newstate();
    if (!L) { snprintf(err, errn, "cannot create a Lua state (out of memory)"); return NULL; }
    luaL_openlibs(L);
    int p = s->npayloads == 1 ? 0 : k;
    if (luaL_loadbuffer(L, s->bootstrap, strlen(s->bootstrap), s->name) != 0) goto fail;
    lua_pushlstring(L, s->payloads[p], s->lens[p]);
    lua_pushlightuserdata(L, s->tensors + s->first[p]);
    lua_pushinteger(L, s->count[p]);
    lua_pushinteger(L, k);
    lua_pushlightuserdata(L, s->datasets);
    lua_pushinteger(L, s->ndatasets);
    if (lua_pcall(L, 6, 1, 0) != 0) goto fail;
    if (!lua_isfunction(L, -1)) { lua_pushstring(L, "the bootstrap did not return a function"); goto fail; }
    s->fn_ref[k] = luaL_ref(L, LUA_REGISTRYINDEX);
    s->states[k] = L;
    *fn_ref = s->fn_ref[k];
    return L;
fail:
    snprintf(err, errn, "starting %s state %d: %s", s->name + (s->name[0] == '='), k + 1, lua_isstring(L, -1) ? lua_tostring(L, -1) : "error");
    lua_close(L);
    return NULL;
}

void nnr_lua_states_free(void *states)
{
    nnr_lua_states *s = states;
    if (!s) return;
    for (int i = 0; i < MAX_STATES; i++)
        if (s->states[i]) lua_close(s->states[i]);
    for (int i = 0; s->tensors && i < s->ntensors; i++) nnr_tensor_release(s->tensors[i]);
    for (int i = 0; s->datasets && i < s->ndatasets; i++) nnr_dataset_release(s->datasets[i]);
    for (int k = 0; s->payloads && k < s->npayloads; k++) free(s->payloads[k]);
    free(s->payloads); free(s->lens); free(s->first); free(s->count);
    free(s->tensors); free(s->datasets);
    free(s->name); free(s->bootstrap);
    free(s);
}

/* the loader's batch function: state `slot` builds the batch of samples (nnr.data.worker) */
int nnr_lua_states_batch(void *ctx, int slot, int64_t epoch, int64_t batch, const int64_t *samples, int64_t count, nnr_tensor **x,
                         nnr_tensor **y, char *err, size_t errn)
{
    nnr_tensor *out[2] = {NULL, NULL};
    int fn_ref;
    *x = *y = NULL;
    lua_State *L = nnr_lua_states_get(ctx, slot, &fn_ref, err, errn);
    if (!L) return NNR_ERR_INVALID;
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
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
