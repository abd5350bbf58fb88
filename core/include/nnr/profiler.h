/* The profiler (core/base/profiler.c; nnr.profiler in Lua): events per thread while it runs. */
#ifndef NNR_PROFILER_H
#define NNR_PROFILER_H

#include "nnr/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* NNR_CDEF_BEGIN */
typedef struct nnr_prof_event {
    const char *name;            /* op, module, autograd node, "DataLoader batch", ... */
    int64_t start_ns;            /* since nnr_profiler_start */
    int64_t dur_ns;
    int64_t bytes;               /* bytes allocated by the event's thread for it */
    int32_t kind;                /* 0 op, 1 scope (module), 2 autograd node, 3 loader batch, 4 wait for data, 5 allocation */
    int32_t tid;                 /* the recording thread (1, 2, ...) */
} nnr_prof_event;
int nnr_profiler_start(void);    /* clears the previous events and the memory peaks */
int nnr_profiler_stop(void);
int nnr_profiler_enabled(void);
double nnr_profiler_seconds(void);                  /* from start to stop (or now) */
int64_t nnr_profiler_dropped(void);                 /* events beyond the buffer limit */
const char *nnr_profiler_intern(const char *name);  /* a stable copy for scope names */
void nnr_profiler_push(const char *interned);       /* a scope (module) on this thread */
void nnr_profiler_pop(void);
void nnr_profiler_thread_label(const char *label);
const char *nnr_profiler_thread_name(int tid);
int64_t nnr_profiler_event_count(void);
int64_t nnr_profiler_events(nnr_prof_event *out, int64_t max);
/* NNR_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* NNR_PROFILER_H */
