/* Collectives between processes for nnr.parallel.Distributed (DESIGN.md decision 9), on MPI
 * (Debian's Open MPI): started with `mpirun -np N nnrun script.lua`. No home-made network layer.
 *
 * MPI is initialised on first use only, so a run that never asks for it pays nothing. Errors
 * come back as statuses (MPI_ERRORS_RETURN), and a rank whose script fails calls MPI_Abort
 * (nnrun does it), so mpirun stops the others with a message naming that rank instead of
 * leaving them waiting in a collective. Built without MPI, every call says how to enable it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ops/internal.h"

#ifdef NNR_HAVE_MPI
#include <mpi.h>

static int inited, finalized, solo, my_rank, my_size;
static int comm_ready[NNR_MAX_DEVICES];     /* by device id: the backend's communicator (NCCL) is set up */
static MPI_Request requests[64];
static int n_requests;

static int mpi_fail(int code, const char *what)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, text, &len);
    return nnr_errorf(NNR_ERR_DEVICE, "%s: MPI error: %.*s", what, len, text);
}

/* nnrun calls it when the script succeeded. A rank that leaves any other way (an error: nnrun
 * aborts; os.exit or a signal: no MPI_Finalize) makes mpirun end the job naming it, rather than
 * blocking in MPI_Finalize while the others wait for it in a collective. */
void nnr_dist_finalize(void)
{
    if (inited && !finalized && !solo) {
        int done = 0;
        MPI_Finalized(&done);
        if (!done) MPI_Finalize();
        finalized = 1;
    }
}

int nnr_dist_available(void) { return 1; }

int nnr_dist_init(int *rank, int *size)
{
    if (!inited) {
        int already = 0;
        MPI_Initialized(&already);
        /* a script not started by mpirun (or another MPI launcher) is a world of one process: no
         * MPI at all, so it also runs where the MPI library lacks its components (a GPU machine
         * with our bundle), and the collectives on its devices still go through NCCL */
        int launched = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
        if (!already && !launched) solo = 1;
        else if (!already) {
            int provided = 0;
            int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
            if (rc != MPI_SUCCESS) return nnr_errorf(NNR_ERR_DEVICE, "distributed: MPI_Init failed (%d)", rc);
        }
        if (!solo) {
            MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
            MPI_Comm_rank(MPI_COMM_WORLD, &my_rank);
            MPI_Comm_size(MPI_COMM_WORLD, &my_size);
        } else {
            my_rank = 0;
            my_size = 1;
        }
        inited = 1;
    }
    *rank = my_rank;
    *size = my_size;
    return NNR_OK;
}

int nnr_dist_initialized(void) { return inited && !finalized; }

static int need_init(const char *what)
{
    if (!inited || finalized) return nnr_errorf(NNR_ERR_INVALID, "%s: call nnr.parallel.Distributed.init() first", what);
    return NNR_OK;
}

static int mpi_type(int dtype, MPI_Datatype *t)
{
    switch (dtype) {
    case NNR_F32: *t = MPI_FLOAT; return 1;
    case NNR_F64: *t = MPI_DOUBLE; return 1;
    case NNR_I64: *t = MPI_INT64_T; return 1;
    case NNR_I32: *t = MPI_INT32_T; return 1;
    case NNR_I8: *t = MPI_INT8_T; return 1;
    case NNR_U8: case NNR_BOOL: *t = MPI_UINT8_T; return 1;
    }
    return 0;
}

/* a contiguous cpu tensor and its MPI type, or an error naming the op */
static int check_tensor(const char *what, const nnr_tensor *t, MPI_Datatype *type)
{
    if (need_init(what)) return nnr_last_status();
    if (!nnr_device_is_host_memory(t->device))
        return nnr_errorf(NNR_ERR_DEVICE, "%s: the tensor is on %s; MPI moves tensors in host memory (the Lua side copies)", what,
                          nnr_device_name(t->device));
    if (!nnr_tensor_is_contiguous(t)) return nnr_errorf(NNR_ERR_INVALID, "%s: the tensor must be contiguous", what);
    if (!mpi_type(t->dtype, type)) return nnr_errorf(NNR_ERR_UNSUPPORTED, "%s: dtype %s is not supported", what, nnr_dtype_name(t->dtype));
    return NNR_OK;
}

static MPI_Op mpi_op(int op) { return op == 1 ? MPI_MAX : op == 2 ? MPI_MIN : op == 3 ? MPI_PROD : MPI_SUM; }

static void *data_of(const nnr_tensor *t) { return (char *)t->storage->data + t->offset * (int64_t)nnr_dtype_nbytes(t->dtype); }

int nnr_dist_barrier(void)
{
    if (need_init("barrier")) return nnr_last_status();
    if (solo) return NNR_OK;
    int rc = MPI_Barrier(MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? NNR_OK : mpi_fail(rc, "barrier");
}

/* a collective on a backend's own device (NNR_OP_ALL_REDUCE/BROADCAST: the cuda backend's NCCL),
 * setting up the communicator on first use: rank 0 draws the id, MPI carries it to the others.
 * NNR_ERR_UNSUPPORTED (no error kept) when the backend has no such path: the caller goes through the host. */
static int device_collective(const char *what, int op_id, nnr_tensor *t, int64_t param)
{
    const nnr_device_entry *d = nnr_device_get(t->device);
    nnr_plugin *p = d ? d->plugin : NULL;
    if (!p || t->device >= NNR_MAX_DEVICES || !nnr_tensor_is_contiguous(t) || !NNR_HAS_FIELD(p, nnr_plugin, get_option) || !p->get_option ||
        !p->set_option)
        return NNR_ERR_UNSUPPORTED;
    if (!comm_ready[t->device]) {
        char id[320] = {0};
        int ok = my_rank == 0 ? p->get_option(p, "nccl_unique_id", id, sizeof id) == NNR_OK : 1;
        if (!solo) {
            MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
            if (ok) MPI_Bcast(id, (int)sizeof id, MPI_CHAR, 0, MPI_COMM_WORLD);
        }
        char spec[400];
        snprintf(spec, sizeof spec, "%s:%d:%d:%d", id, my_rank, my_size, d->local_index);
        int mine = ok && p->set_option(p, "nccl_comm", spec) == NNR_OK, all = mine;
        if (!solo) MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        nnr_set_error(NNR_OK, "");
        if (!all) return NNR_ERR_UNSUPPORTED;
        comm_ready[t->device] = 1;
    }
    nnr_op_params prm = {.struct_size = sizeof prm, .i = {param}};
    nnr_tensor_desc dd;
    nnr_tensor_desc_of(t, &dd);
    nnr_op_call call = {.struct_size = sizeof call, .op = (uint32_t)op_id, .n_inputs = 0, .n_outputs = 1, .outputs = {&dd}, .params = &prm};
    if (!p->supports(p, &call)) return NNR_ERR_UNSUPPORTED;
    int st = nnr_dispatch(what, t->device, &call);
    if (st == NNR_OK) atomic_fetch_add(&t->storage->version, 1);
    return st == NNR_ERR_UNSUPPORTED ? NNR_ERR_DEVICE : st;
}

/* a tensor off the cpu through host memory: a contiguous cpu copy, the collective, the copy back */
static int through_host(nnr_tensor *t, int (*fn)(nnr_tensor *, int), int arg)
{
    nnr_tensor *h = nnr_to(t, t->dtype, nnr_host_device());
    if (!h) return nnr_last_status();
    int st = fn(h, arg);
    if (st == NNR_OK) st = nnr_copy_(t, h);
    nnr_tensor_release(h);
    return st;
}

/* in place; op 0 sum, 1 max, 2 min, 3 product. Counts above INT_MAX go in pieces. */
int nnr_dist_all_reduce(nnr_tensor *t, int op)
{
    MPI_Datatype type;
    if (need_init("all_reduce")) return nnr_last_status();
    if (!nnr_device_is_host_memory(t->device)) {
        int st = device_collective("all_reduce", NNR_OP_ALL_REDUCE, t, op);
        return st != NNR_ERR_UNSUPPORTED ? st : through_host(t, nnr_dist_all_reduce, op);
    }
    if (check_tensor("all_reduce", t, &type)) return nnr_last_status();
    if (solo) return NNR_OK;
    int64_t n = nnr_tensor_numel(t), es = (int64_t)nnr_dtype_nbytes(t->dtype);
    char *p = data_of(t);
    for (int64_t at = 0; at < n; at += 1 << 30) {
        int count = (int)(n - at < (1 << 30) ? n - at : (1 << 30));
        int rc = MPI_Allreduce(MPI_IN_PLACE, p + at * es, count, type, mpi_op(op), MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "all_reduce");
    }
    atomic_fetch_add(&t->storage->version, 1);
    return NNR_OK;
}

/* started now, finished by nnr_dist_wait_all: the buckets of DistributedDataParallel overlap */
int nnr_dist_all_reduce_start(nnr_tensor *t, int op)
{
    MPI_Datatype type;
    if (check_tensor("all_reduce", t, &type)) return nnr_last_status();
    int64_t n = nnr_tensor_numel(t);
    if (n > (1 << 30) || solo) return nnr_dist_all_reduce(t, op);
    if (n_requests >= 64) return nnr_errorf(NNR_ERR_INVALID, "all_reduce: more than 64 reductions in flight; wait first");
    int rc = MPI_Iallreduce(MPI_IN_PLACE, data_of(t), (int)n, type, mpi_op(op), MPI_COMM_WORLD, &requests[n_requests]);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "all_reduce");
    n_requests++;
    atomic_fetch_add(&t->storage->version, 1);
    return NNR_OK;
}

int nnr_dist_wait_all(void)
{
    if (n_requests == 0) return NNR_OK;
    int rc = MPI_Waitall(n_requests, requests, MPI_STATUSES_IGNORE);
    n_requests = 0;
    return rc == MPI_SUCCESS ? NNR_OK : mpi_fail(rc, "all_reduce");
}

int nnr_dist_broadcast(nnr_tensor *t, int root)
{
    MPI_Datatype type;
    if (need_init("broadcast")) return nnr_last_status();
    if (root < 0 || root >= my_size) return nnr_errorf(NNR_ERR_INVALID, "broadcast: root %d, world size %d", root, my_size);
    if (!nnr_device_is_host_memory(t->device)) {
        int st = device_collective("broadcast", NNR_OP_BROADCAST, t, root);
        return st != NNR_ERR_UNSUPPORTED ? st : through_host(t, nnr_dist_broadcast, root);
    }
    if (check_tensor("broadcast", t, &type)) return nnr_last_status();
    if (solo) return NNR_OK;
    int64_t n = nnr_tensor_numel(t), es = (int64_t)nnr_dtype_nbytes(t->dtype);
    char *p = data_of(t);
    for (int64_t at = 0; at < n; at += 1 << 30) {
        int count = (int)(n - at < (1 << 30) ? n - at : (1 << 30));
        int rc = MPI_Bcast(p + at * es, count, type, root, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "broadcast");
    }
    atomic_fetch_add(&t->storage->version, 1);
    return NNR_OK;
}

/* out holds world_size blocks of in's size, rank order */
int nnr_dist_all_gather(nnr_tensor *out, const nnr_tensor *in)
{
    MPI_Datatype type, type2;
    if (check_tensor("all_gather", in, &type) || check_tensor("all_gather", out, &type2)) return nnr_last_status();
    int64_t n = nnr_tensor_numel(in);
    if (out->dtype != in->dtype || nnr_tensor_numel(out) != n * my_size)
        return nnr_errorf(NNR_ERR_INVALID, "all_gather: output of %lld elements, expected %lld (%d ranks)", (long long)nnr_tensor_numel(out),
                          (long long)(n * my_size), my_size);
    if (n > (1 << 30)) return nnr_errorf(NNR_ERR_INVALID, "all_gather: %lld elements per rank is too many", (long long)n);
    if (solo) { memcpy(data_of(out), data_of(in), (size_t)n * nnr_dtype_nbytes(in->dtype)); return NNR_OK; }
    int rc = MPI_Allgather(data_of(in), (int)n, type, data_of(out), (int)n, type, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "all_gather");
    atomic_fetch_add(&out->storage->version, 1);
    return NNR_OK;
}

/* this rank failed: say so and take the job down (mpirun stops the others and names this rank) */
void nnr_dist_abort(int code)
{
    if (!inited || finalized || solo) return;
    fprintf(stderr, "nnrun: rank %d of %d failed; aborting the job\n", my_rank, my_size);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
}

#else  /* built without MPI */

static int no_mpi(const char *what)
{
    return nnr_errorf(NNR_ERR_UNSUPPORTED, "%s: this nnrun was built without MPI; install Open MPI (apt-get install libopenmpi-dev "
                      "openmpi-bin) and rebuild to train across processes and machines", what);
}

int nnr_dist_available(void) { return 0; }
int nnr_dist_init(int *rank, int *size) { *rank = 0; *size = 1; return no_mpi("distributed"); }
int nnr_dist_initialized(void) { return 0; }
int nnr_dist_barrier(void) { return no_mpi("barrier"); }
int nnr_dist_all_reduce(nnr_tensor *t, int op) { (void)t; (void)op; return no_mpi("all_reduce"); }
int nnr_dist_all_reduce_start(nnr_tensor *t, int op) { (void)t; (void)op; return no_mpi("all_reduce"); }
int nnr_dist_wait_all(void) { return NNR_OK; }
int nnr_dist_broadcast(nnr_tensor *t, int root) { (void)t; (void)root; return no_mpi("broadcast"); }
int nnr_dist_all_gather(nnr_tensor *out, const nnr_tensor *in) { (void)out; (void)in; return no_mpi("all_gather"); }
void nnr_dist_abort(int code) { (void)code; }
void nnr_dist_finalize(void) {}
#endif
