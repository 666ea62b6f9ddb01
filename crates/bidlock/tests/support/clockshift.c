/*
 * clockshift: an LD_PRELOAD library that moves one process's wall clock.
 *
 * The Redlock token tests (crates/bidlock/tests/redlock_tokens.rs) load it into a single
 * redis-server to give that node a clock that runs ahead of (or behind) the others'.
 * It adds CLOCKSHIFT_US microseconds (a signed decimal; 0 when unset) to what
 * gettimeofday(), clock_gettime(CLOCK_REALTIME...) and time() return. Redis 7.0's TIME
 * command, which the fencing scripts read, calls gettimeofday(); key expiry reads the
 * same clock, so the shift is consistent inside the server. The monotonic clocks are
 * left alone. Compiled at test time with `cc -shared -fPIC ... -ldl`.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long long shift_us(void) {
    static int read;
    static long long shift;
    if (!read) {
        const char *s = getenv("CLOCKSHIFT_US");
        shift = s ? atoll(s) : 0;
        read = 1;
    }
    return shift;
}

static void shift_timespec(struct timespec *ts) {
    long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + shift_us() * 1000LL;
    ts->tv_sec = ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    static int (*real)(struct timeval *restrict, void *restrict);
    if (!real) {
        real = (int (*)(struct timeval *restrict, void *restrict))dlsym(RTLD_NEXT, "gettimeofday");
    }
    int r = real(tv, tz);
    if (r == 0) {
        long long us = (long long)tv->tv_sec * 1000000LL + tv->tv_usec + shift_us();
        tv->tv_sec = us / 1000000LL;
        tv->tv_usec = us % 1000000LL;
    }
    return r;
}

int clock_gettime(clockid_t clk, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real) {
        real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    }
    int r = real(clk, ts);
    if (r == 0 && (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE)) {
        shift_timespec(ts);
    }
    return r;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) {
        *out = ts.tv_sec;
    }
    return ts.tv_sec;
}
