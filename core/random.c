/* The global generator state: a seed and a counter for Philox4x32-10. Ops
 * reserve a range of the counter, so results do not depend on the backend
 * or the thread count, and the state is two numbers a checkpoint can keep. */
#include <pthread.h>
#include "internal.h"

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
