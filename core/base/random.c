/* The random generator: Philox4x32-10 (nnr/philox.h), the one generator of nnrun.
 *
 * Tensor fills draw from a global stream, a seed and a counter: an op reserves a range of the
 * counter, so results do not depend on the backend or the thread count, and the state is two
 * numbers a checkpoint can keep. The data loader and the samplers draw from keyed streams instead:
 * the key of stream (seed, stream, epoch, index) is folded in with Philox itself (as JAX's
 * fold_in does with Threefry), so batch k of epoch e depends on (seed, e, k) only, whatever the
 * workers, the world size or the other draws. */
#include <pthread.h>
#include "nnr/philox.h"
#include "base/internal.h"

static pthread_mutex_t rng_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t rng_seed = 67280421310721ull;
static uint64_t rng_offset;

void nnr_manual_seed(uint64_t seed)
{
    pthread_mutex_lock(&rng_lock);
    rng_seed = seed;
    rng_offset = 0;
    pthread_mutex_unlock(&rng_lock);
}

uint64_t nnr_rng_seed(void) { return rng_seed; }
uint64_t nnr_rng_offset(void) { return rng_offset; }

void nnr_rng_set_state(uint64_t seed, uint64_t offset)
{
    pthread_mutex_lock(&rng_lock);
    rng_seed = seed;
    rng_offset = offset;
    pthread_mutex_unlock(&rng_lock);
}

void nnr_rng_take(uint64_t count, uint64_t *seed, uint64_t *offset)
{
    pthread_mutex_lock(&rng_lock);
    *seed = rng_seed;
    *offset = rng_offset;
    rng_offset += count;
    pthread_mutex_unlock(&rng_lock);
}

/* ---------------- keyed streams ---------------- */

/* a new key from key and a value: the first two words of Philox's block at counter `value` */
static uint64_t fold_in(uint64_t key, uint64_t value)
{
    uint32_t out[4];
    nnr_philox(value, key, out);
    return (uint64_t)out[0] | (uint64_t)out[1] << 32;
}

void nnr_rng_stream_init(nnr_rng_stream *s, uint64_t seed, uint64_t stream, uint64_t epoch, uint64_t index)
{
    s->key = fold_in(fold_in(fold_in(seed, stream), epoch), index);
    s->counter = 0;
    s->used = 4;
}

uint64_t nnr_rng_next_u64(nnr_rng_stream *s)
{
    if (s->used >= 4) {
        nnr_philox(s->counter++, s->key, s->block);
        s->used = 0;
    }
    uint64_t v = (uint64_t)s->block[s->used] | (uint64_t)s->block[s->used + 1] << 32;
    s->used += 2;
    return v;
}

double nnr_rng_uniform(nnr_rng_stream *s) { return (double)(nnr_rng_next_u64(s) >> 11) * 0x1p-53; }

/* Lemire's multiply-shift with rejection: no modulo bias */
uint64_t nnr_rng_below(nnr_rng_stream *s, uint64_t n)
{
    if (n <= 1) return 0;
    unsigned __int128 m = (unsigned __int128)nnr_rng_next_u64(s) * n;
    uint64_t low = (uint64_t)m;
    if (low < n) {
        uint64_t threshold = -n % n;
        while (low < threshold) {
            m = (unsigned __int128)nnr_rng_next_u64(s) * n;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

int nnr_random_permutation(uint64_t seed, uint64_t stream, uint64_t epoch, int64_t n, int64_t *out)
{
    if (n < 0) return nnr_errorf(NNR_ERR_INVALID, "permutation: length %lld is negative", (long long)n);
    nnr_rng_stream s;
    nnr_rng_stream_init(&s, seed, stream, epoch, 0);
    for (int64_t i = 0; i < n; i++) out[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {            /* Fisher-Yates */
        int64_t j = (int64_t)nnr_rng_below(&s, (uint64_t)i + 1);
        int64_t t = out[i]; out[i] = out[j]; out[j] = t;
    }
    return NNR_OK;
}

int nnr_random_uniforms(uint64_t seed, uint64_t stream, uint64_t epoch, int64_t first, int64_t n, double *out)
{
    if (first < 0 || n < 0) return nnr_errorf(NNR_ERR_INVALID, "uniforms: position %lld and count %lld must be >= 0", (long long)first, (long long)n);
    nnr_rng_stream s;
    nnr_rng_stream_init(&s, seed, stream, epoch, 0);
    /* number k is the k-th 64-bit draw: two per Philox block */
    s.counter = (uint64_t)first / 2;
    if (first % 2) { nnr_philox(s.counter++, s.key, s.block); s.used = 2; }
    for (int64_t i = 0; i < n; i++) out[i] = nnr_rng_uniform(&s);
    return NNR_OK;
}
