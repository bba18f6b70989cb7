/* Large buffers (thread scratch, packed weights) come from a small cache of freed blocks
 * instead of straight from malloc. A fresh multi-MiB block is given back to the OS on free
 * and faults every page in again on first touch: measured here, a 9 MiB block cost ~2.4 us a
 * page (5 ms a call, more than the convolution it served). Blocks are reused when their size
 * is between the request and twice it; the cache holds at most CACHE_SLOTS blocks and
 * CACHE_BYTES in all, so what it keeps is bounded. Contents are never reused, only memory. */
#include <stdatomic.h>
#include <stdlib.h>

#include "driver.h"

enum { CACHE_SLOTS = 16 };
#define CACHE_BYTES ((int64_t)256 << 20)
#define CACHE_MIN_BYTES ((int64_t)256 << 10)   /* smaller blocks: plain malloc/free */

static struct { void *ptr; int64_t bytes; } cache[CACHE_SLOTS];
static int64_t cached_bytes;
static atomic_flag cache_lock = ATOMIC_FLAG_INIT;

static void lock(void) { while (atomic_flag_test_and_set_explicit(&cache_lock, memory_order_acquire)) {} }
static void unlock(void) { atomic_flag_clear_explicit(&cache_lock, memory_order_release); }

void *buffer_alloc(int64_t bytes, int64_t *capacity)
{
    *capacity = round_up64(bytes);
    if (bytes <= 0)
        return NULL;
    if (*capacity >= CACHE_MIN_BYTES) {
        int best = -1;
        lock();
        for (int i = 0; i < CACHE_SLOTS; i++)
            if (cache[i].ptr && cache[i].bytes >= *capacity && cache[i].bytes <= 2 * *capacity &&
                (best < 0 || cache[i].bytes < cache[best].bytes))
                best = i;
        void *p = NULL;
        if (best >= 0) {
            p = cache[best].ptr;
            *capacity = cache[best].bytes;
            cached_bytes -= cache[best].bytes;
            cache[best].ptr = NULL;
        }
        unlock();
        if (p)
            return p;
    }
    return aligned_alloc(64, (size_t)*capacity);
}

void buffer_free(void *p, int64_t capacity)
{
    if (!p)
        return;
    if (capacity >= CACHE_MIN_BYTES) {
        lock();
        int slot = -1;
        for (int i = 0; i < CACHE_SLOTS && slot < 0; i++)
            if (!cache[i].ptr)
                slot = i;
        if (slot >= 0 && cached_bytes + capacity <= CACHE_BYTES) {
            cache[slot].ptr = p;
            cache[slot].bytes = capacity;
            cached_bytes += capacity;
            p = NULL;
        }
        unlock();
    }
    free(p);
}

void i2r_release_buffers(void)
{
    lock();
    for (int i = 0; i < CACHE_SLOTS; i++) {
        free(cache[i].ptr);
        cache[i].ptr = NULL;
    }
    cached_bytes = 0;
    unlock();
}
