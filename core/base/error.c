/* Thread-local error state and the interrupt flag. C functions set a message
 * and return a status or NULL; the Lua layer turns it into error(). */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include "base/internal.h"

static _Thread_local char last_error[1024];
static _Thread_local int last_status;
static volatile sig_atomic_t interrupt_flag;

const char *nnr_last_error(void) { return last_error; }
int nnr_last_status(void) { return last_status; }

/* A message is formatted into a buffer of its own and then copied: its arguments may be (or point
 * into) the last message itself, as when an error wraps the one beneath it. */
int nnr_set_error(int status, const char *message)
{
    char buf[sizeof last_error];
    snprintf(buf, sizeof buf, "%s", message ? message : "");
    memcpy(last_error, buf, sizeof buf);
    last_status = status;
    return status;
}

int nnr_errorf(int status, const char *fmt, ...)
{
    char buf[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(last_error, buf, sizeof buf);
    last_status = status;
    return status;
}

const char *nnr_shape_str(char *buf, size_t n, int ndim, const int64_t *sizes)
{
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, i ? ", %lld" : "%lld", (long long)sizes[i]);
    if (used < n) snprintf(buf + used, n - used, "]");
    return buf;
}

int64_t nnr_env_int(const char *name, int64_t dflt, int64_t lo, int64_t hi)
{
    const char *v = getenv(name);
    if (!v) return dflt;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    while (*end == ' ' || *end == '\t' || *end == '\n') end++;
    if (end != v && *end == 0 && errno == 0 && n >= lo && n <= hi) return n;
    /* each variable is read once, at init, so each is reported once */
    fprintf(stderr, "nnrun: %s=%.60s is not a whole number in %lld..%lld; ignored (the default applies)\n", name, v, (long long)lo,
            (long long)hi);
    return dflt;
}

void nnr_interrupt(void) { interrupt_flag = 1; }
int nnr_interrupt_pending(void) { return interrupt_flag != 0; }
void nnr_clear_interrupt(void) { interrupt_flag = 0; }
/* Ctrl-C belongs to the thread that runs the script: the loader's workers never see it (the
 * waiting caller does, and stops them), so it cannot land on a sample being built */
static _Thread_local int deaf;
void nnr_ignore_interrupts(int on) { deaf = on; }
int nnr_interrupted_flag(void) { return !deaf && interrupt_flag != 0; }
