/*
 * Threads: the default thread count and the parallel loop, run on the threads
 * of the GNU OpenMP runtime where the process has loaded one (torch has), else
 * on a pool of helpers of our own that sleep between jobs.
 */
#define _GNU_SOURCE 1

#include "core.h"

#include <stdlib.h>

#if defined(_WIN32)
#define NS_NO_PTHREADS 1
#else
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>
#endif
#if defined(__linux__) && !defined(NS_NO_PTHREADS)
#include <dlfcn.h>
#define NS_SHARE_OPENMP 1
#endif

#ifndef NS_SHARE_OPENMP
int ns_share_openmp = 0;
#endif

int ns_default_threads(void) {
#if defined(NS_NO_PTHREADS)
    return 1;
#else
#if defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int c = CPU_COUNT(&set);
        if (c > 0) return c;
    }
#endif
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)(c < NS_MAX_THREADS ? c : NS_MAX_THREADS) : 1;
#endif
}


#ifndef NS_NO_PTHREADS
/* A parallel loop shared by the calling thread and its helpers.  Work is handed
 * out in chunks from an atomic counter, so a helper that starts late (thread
 * start-up can take milliseconds on a busy or virtualised machine) only takes
 * what is left, and the caller never waits for a helper that has no work.  The
 * job lives on the heap and is freed by its last user: helpers are detached and
 * touch the caller's context only while a chunk they claimed is unfinished,
 * which the caller waits for. */
/* The work of one parallel loop, in chunks that any thread may claim. */
typedef struct {
    ns_range_fn fn;
    void *ctx;
    int64_t n, grain, nchunks;
    atomic_llong next; /* next chunk to claim */
} ns_chunks;

/* About 16 chunks per thread (of `units` units of `align` elements) balance late starters without
 * much overhead. */
static void chunks_init(ns_chunks *c, ns_range_fn fn, void *ctx, int64_t n, int64_t units, int64_t align,
                        int64_t nt) {
    int64_t per = (units + 16 * nt - 1) / (16 * nt);
    c->fn = fn;
    c->ctx = ctx;
    c->n = n;
    c->grain = per * align;
    c->nchunks = (n + c->grain - 1) / c->grain;
    atomic_init(&c->next, 0);
}

/* Claims the next chunk and runs it; 0 when none is left. */
static int chunk_run_next(ns_chunks *c) {
    int64_t k = atomic_fetch_add(&c->next, 1);
    if (k >= c->nchunks) return 0;
    int64_t b = k * c->grain, e = b + c->grain < c->n ? b + c->grain : c->n;
    c->fn(c->ctx, b, e);
    return 1;
}

typedef struct {
    ns_chunks ch;
    atomic_llong done; /* chunks finished */
    atomic_int refs;   /* the caller plus every started helper */
    pthread_mutex_t mu;
    pthread_cond_t cv;
} ns_job;

static void job_work(ns_job *j) {
    while (chunk_run_next(&j->ch)) {
        if (atomic_fetch_add(&j->done, 1) + 1 == j->ch.nchunks) {
            pthread_mutex_lock(&j->mu);
            pthread_cond_signal(&j->cv);
            pthread_mutex_unlock(&j->mu);
        }
    }
}

static void job_release(ns_job *j) {
    if (atomic_fetch_sub(&j->refs, 1) == 1) {
        pthread_cond_destroy(&j->cv);
        pthread_mutex_destroy(&j->mu);
        free(j);
    }
}

static void *helper_main(void *p) {
    job_work(p);
    job_release(p);
    return NULL;
}

/* A pool of helper threads that live as long as the process and sleep between
 * jobs, so a call pays a wake-up instead of a thread start.  One caller at a
 * time offers its job to the pool (others start helpers of their own, as
 * above).  A helper takes a reference to the offered job under pool_mu, and the
 * caller withdraws the offer under pool_mu before dropping its own reference,
 * so a helper that wakes late finds either a live job or none. */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cv = PTHREAD_COND_INITIALIZER;
static ns_job *pool_job;     /* the job on offer, or NULL */
static unsigned long pool_gen; /* bumped for every offer */
static int pool_offers;      /* helpers the offered job still wants */
static int pool_size;        /* helpers started */
static atomic_flag pool_busy = ATOMIC_FLAG_INIT;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void *pool_main(void *unused) {
    (void)unused;
    pthread_mutex_lock(&pool_mu);
    unsigned long seen = pool_gen;
    for (;;) {
        while (pool_gen == seen) pthread_cond_wait(&pool_cv, &pool_mu);
        seen = pool_gen;
        ns_job *j = pool_job;
        if (!j || pool_offers <= 0) continue;
        pool_offers--;
        atomic_fetch_add(&j->refs, 1);
        pthread_mutex_unlock(&pool_mu);
        job_work(j);
        job_release(j);
        pthread_mutex_lock(&pool_mu);
    }
    return NULL;
}

/* In a child process after fork() the helpers do not exist: start afresh. */
static void pool_after_fork(void) {
    pthread_mutex_init(&pool_mu, NULL);
    pthread_cond_init(&pool_cv, NULL);
    pool_job = NULL;
    pool_offers = 0;
    pool_size = 0;
    atomic_flag_clear(&pool_busy);
}

static void pool_init(void) { pthread_atfork(NULL, NULL, pool_after_fork); }

/* Offers j to `want` pool helpers (starting missing ones); returns 0 if the
 * pool is in use by another caller. */
static int pool_offer(ns_job *j, int want) {
    if (atomic_flag_test_and_set(&pool_busy)) return 0;
    pthread_once(&pool_once, pool_init);
    pthread_mutex_lock(&pool_mu);
    while (pool_size < want) {
        pthread_attr_t attr;
        if (pthread_attr_init(&attr) != 0) break;
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, (size_t)1 << 20);
        pthread_t th;
        int rc = pthread_create(&th, &attr, pool_main, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        pool_size++;
    }
    pool_job = j;
    pool_offers = want;
    pool_gen++;
    pthread_cond_broadcast(&pool_cv);
    pthread_mutex_unlock(&pool_mu);
    return 1;
}

static void pool_withdraw(void) {
    pthread_mutex_lock(&pool_mu);
    pool_job = NULL;
    pool_offers = 0;
    pthread_mutex_unlock(&pool_mu);
    atomic_flag_clear(&pool_busy);
}
#endif

#ifdef NS_SHARE_OPENMP
/* The OpenMP runtime that torch loads (libgomp.so.1, torch/lib's own copy in its
 * wheels) keeps its threads spinning for a while after each parallel region.
 * Helpers of our own, woken right after a torch op, then share cores with those
 * spinners and lose their time slices: on two cores, with two threads each,
 * spatial dropout's forward+backward over 2^20 elements ran 1.08-1.35x of
 * torch's. So where the process has that runtime loaded, a parallel loop runs
 * on its threads instead (GOMP_parallel, the entry point `#pragma omp parallel`
 * compiles to, stable since GCC 4.9), looked up without loading anything. A
 * forked child, whose runtime may not survive the fork, keeps to our pool. */
typedef void (*ns_gomp_parallel_fn)(void (*fn)(void *), void *data, unsigned nthreads, unsigned flags);
static atomic_uintptr_t gomp_parallel_ptr; /* the runtime's GOMP_parallel, once found */
static atomic_int gomp_forked;             /* set in a child after fork() */
int ns_share_openmp = 1;                   /* 0: always our pool */

static void gomp_after_fork(void) { atomic_store(&gomp_forked, 1); }
static pthread_once_t gomp_once = PTHREAD_ONCE_INIT;
static void gomp_init(void) { pthread_atfork(NULL, NULL, gomp_after_fork); }

static ns_gomp_parallel_fn ns_gomp_parallel(void) {
    pthread_once(&gomp_once, gomp_init);
    if (!ns_share_openmp || atomic_load(&gomp_forked)) return NULL;
    uintptr_t f = atomic_load(&gomp_parallel_ptr);
    if (f) return (ns_gomp_parallel_fn)f;
    void *lib = dlopen("libgomp.so.1", RTLD_LAZY | RTLD_LOCAL | RTLD_NOLOAD); /* loaded already, or NULL */
    if (!lib) return NULL;
    void *sym = dlsym(lib, "GOMP_parallel");
    /* the handle stays open: the runtime stays loaded as long as torch, which loaded it */
    if (!sym) return NULL;
    atomic_store(&gomp_parallel_ptr, (uintptr_t)sym);
    return (ns_gomp_parallel_fn)sym;
}

/* Every thread of the team claims chunks until none are left; GOMP_parallel
 * returns once all of them have. */
static void omp_body(void *p) {
    while (chunk_run_next(p)) {
    }
}
#endif

void ns_threads_init(void) {
#ifdef NS_SHARE_OPENMP
    pthread_once(&gomp_once, gomp_init); /* so that a fork from now on is seen, used or not */
#endif
}

int ns_openmp_shared(void) {
#ifdef NS_SHARE_OPENMP
    return ns_gomp_parallel() != NULL;
#else
    return 0;
#endif
}

/* Runs fn over [0, n) on up to nthreads threads (the caller included), in
 * chunks whose boundaries are multiples of `align`; one thread when
 * n < min_par.  Falls back to the calling thread alone if helpers cannot be
 * created. */
void ns_parallel_for(ns_range_fn fn, void *ctx, int64_t n, int64_t align, int64_t min_par, int nthreads) {
    if (n <= 0) return;
    int64_t nt = nthreads > 0 ? nthreads : ns_default_threads();
    int64_t units = (n + align - 1) / align;
    if (n < min_par) nt = 1;
    if (nt > units) nt = units;
    if (nt > NS_MAX_THREADS) nt = NS_MAX_THREADS;
#ifdef NS_SHARE_OPENMP
    ns_gomp_parallel_fn gomp = nt > 1 ? ns_gomp_parallel() : NULL;
    if (gomp) {
        ns_chunks ch;
        chunks_init(&ch, fn, ctx, n, units, align, nt);
        gomp(omp_body, &ch, (unsigned)nt, 0);
        return;
    }
#endif
#ifndef NS_NO_PTHREADS
    ns_job *j = nt > 1 ? malloc(sizeof *j) : NULL;
    if (j) {
        chunks_init(&j->ch, fn, ctx, n, units, align, nt);
        atomic_init(&j->done, 0);
        atomic_init(&j->refs, 1);
        pthread_mutex_init(&j->mu, NULL);
        pthread_cond_init(&j->cv, NULL);
        int pooled = pool_offer(j, (int)(nt - 1));
        if (!pooled) {
            pthread_attr_t attr;
            int attr_ok = pthread_attr_init(&attr) == 0;
            if (attr_ok) {
                pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                pthread_attr_setstacksize(&attr, (size_t)1 << 20);
            }
            for (int64_t i = 1; i < nt && attr_ok; i++) {
                pthread_t th;
                atomic_fetch_add(&j->refs, 1);
                if (pthread_create(&th, &attr, helper_main, j) != 0) {
                    atomic_fetch_sub(&j->refs, 1);
                    break;
                }
            }
            if (attr_ok) pthread_attr_destroy(&attr);
        }
        job_work(j);
        pthread_mutex_lock(&j->mu);
        while (atomic_load(&j->done) < j->ch.nchunks) pthread_cond_wait(&j->cv, &j->mu);
        pthread_mutex_unlock(&j->mu);
        if (pooled) pool_withdraw();
        job_release(j);
        return;
    }
#else
    (void)align;
#endif
    fn(ctx, 0, n);
}
