/* libnnr: the C core of nnrun. One header per part of the core, in the order of their
 * dependencies (docs/architecture.md):
 *
 *   nnr/base.h      errors, plugins and devices, threads, memory accounting, the random generator
 *   nnr/profiler.h  the profiler's events (base)
 *   nnr/tensor.h    tensors: lifetime, metadata, creation, element access, dispatch counters
 *   nnr/autograd.h  gradient recording and backward
 *   nnr/ops.h       every op: views, copies, elementwise, reductions, linear algebra, indexing,
 *                   convolution, pooling, normalization, optimizer steps, autocast
 *   nnr/data.h      files (safetensors, IDX, CSV, images), datasets, the data loader
 *   nnr/host.h      LuaJIT worker states, DataParallel replicas, MPI
 *
 * The Lua layer binds all of it with ffi.cdef: the text between NNR_CDEF_BEGIN and NNR_CDEF_END of
 * each header is embedded in the library (nnr_cdef_text), so there is one source of truth.
 *
 * Conventions:
 *  - Handles are opaque. Functions returning a pointer return NULL on error;
 *    functions returning int return an nnr_status (0 = ok). Either way the
 *    thread's message is in nnr_last_error().
 *  - Dimensions and indices are 0-based here; the Lua layer converts from 1-based.
 *  - A returned nnr_tensor* is a new reference; release it with
 *    nnr_tensor_release (Lua does this through ffi.gc).
 */
#ifndef NNR_H
#define NNR_H

#include "nnr/plugin.h"
#include "nnr/base.h"
#include "nnr/profiler.h"
#include "nnr/tensor.h"
#include "nnr/autograd.h"
#include "nnr/ops.h"
#include "nnr/data.h"
#include "nnr/host.h"

#endif /* NNR_H */
