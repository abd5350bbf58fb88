/* nnrun --check-backend lib.so [--ops PATTERN]: supervises the conformance kit (lua/nnr/conformance.lua)
 * in a child process, so that a kernel that crashes, or hangs, takes down a child and not the kit.
 *
 * The child loads the plugins and runs the rows from a given one on, writing protocol lines:
 *   @@BEGIN row device op dtype variant     before a row runs
 *   @@ROW row status detail                 its result (native, fallback, extension, skip, FAIL)
 *   @@SKIP reason                           no device of the backend (exit 77, ctest's skip)
 *   @@END rows                              the last row is done
 * The parent prints each row as it comes. When the child dies in a row (a signal), or says nothing
 * for ROW_TIMEOUT seconds, that row is a FAIL naming the op and the signal, and a new child goes on
 * from the next row. The parent never loads a plugin itself: a child is forked from a clean state,
 * which GPU drivers need. At the end: a summary by status, and the exit status (0 when nothing failed). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <lauxlib.h>
#include "host/nnrun.h"

enum { ROW_TIMEOUT = 300 };

typedef struct tally {
    int native, fallback, extension, skipped, failed;
    int begun;                       /* the row the child started last, 0 none */
    char begun_what[256];            /* "device op dtype variant" of that row */
    int ended;                       /* the child said @@END */
    int skip_all;                    /* the child said @@SKIP */
} tally;

/* the child: the kit's rows from `from` on, protocol lines on stdout */
static int run_child(const char *name, const char *ops, int from)
{
    lua_State *L = nnrun_new_state();
    if (!L) return 1;
    static const char code[] = "require('nnr.conformance').run(...)";
    int status = luaL_loadbuffer(L, code, sizeof code - 1, "=check-backend");
    if (status == 0) {
        lua_pushstring(L, name);
        if (ops) lua_pushstring(L, ops); else lua_pushnil(L);
        lua_pushinteger(L, from);
        status = nnrun_docall(L, 3, 0);
    }
    fflush(stdout);
    return status ? 1 : 0;
}

static void print_row(tally *t, const char *line)
{
    int row;
    char status[32], detail[1024] = "";
    if (sscanf(line, "@@ROW %d\t%31[^\t]\t%1023[^\n]", &row, status, detail) < 2) return;
    if (strcmp(status, "native") == 0) t->native++;
    else if (strcmp(status, "fallback") == 0) t->fallback++;
    else if (strcmp(status, "extension") == 0) t->extension++;
    else if (strcmp(status, "skip") == 0) t->skipped++;
    else t->failed++;
    printf("  %-62s %-9s %s\n", t->begun == row ? t->begun_what : "?", status, detail);
    fflush(stdout);
}

static void take_line(tally *t, char *line)
{
    if (strncmp(line, "@@BEGIN ", 8) == 0) {
        char dev[64] = "", op[64] = "", dt[16] = "", variant[96] = "";
        sscanf(line + 8, "%d\t%63[^\t]\t%63[^\t]\t%15[^\t]\t%95[^\n]", &t->begun, dev, op, dt, variant);
        snprintf(t->begun_what, sizeof t->begun_what, "%-8s %-26s %-5s %-20s", dev, op, dt, variant);
    } else if (strncmp(line, "@@ROW ", 6) == 0) {
        print_row(t, line);
    } else if (strncmp(line, "@@SKIP ", 7) == 0) {
        printf("skip: %s\n", line + 7);
        t->skip_all = 1;
    } else if (strncmp(line, "@@END", 5) == 0) {
        t->ended = 1;
    } else {
        printf("%s\n", line);        /* whatever else the child printed */
    }
}

/* reads the child's lines until it closes its end; 1 when it went silent for ROW_TIMEOUT seconds */
static int read_child(int fd, tally *t)
{
    char buf[8192];
    size_t used = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int timed_out = 0;
    for (;;) {
        int r = poll(&p, 1, ROW_TIMEOUT * 1000);
        if (r == 0) { timed_out = 1; break; }
        if (r < 0) { if (errno == EINTR) continue; break; }
        ssize_t got = read(fd, buf + used, sizeof buf - 1 - used);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        used += (size_t)got;
        buf[used] = 0;
        char *start = buf, *nl;
        while ((nl = strchr(start, '\n'))) {
            *nl = 0;
            take_line(t, start);
            start = nl + 1;
        }
        used = strlen(start);
        memmove(buf, start, used);
        if (used == sizeof buf - 1) { buf[used] = 0; take_line(t, buf); used = 0; }   /* a line too long: take it as it is */
    }
    if (used) { buf[used] = 0; take_line(t, buf); }
    close(fd);
    return timed_out;
}

/* one child from row `from`; 0 when it finished, else the row it was in when it died (-1: before any) */
static int supervise(const char *name, const char *ops, int from, tally *t)
{
    int fds[2];
    if (pipe(fds) != 0) { perror("nnrun: pipe"); return -1; }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { perror("nnrun: fork"); return -1; }
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[1]);
        setenv("NNR_LOG", "3", 0);      /* the rows say what fell back; the core's warnings would repeat it */
        _exit(run_child(name, ops, from));
    }
    close(fds[1]);
    t->begun = 0;
    int timed_out = read_child(fds[0], t);
    if (timed_out) kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (t->ended || t->skip_all) return 0;
    int died_in = t->begun ? t->begun : -1;
    char why[128];
    if (timed_out) snprintf(why, sizeof why, "no answer for %d s: killed", ROW_TIMEOUT);
    else if (WIFSIGNALED(status)) snprintf(why, sizeof why, "crashed: signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else snprintf(why, sizeof why, "the kit stopped (exit status %d)", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    t->failed++;
    printf("  %-62s %-9s %s\n", died_in > 0 ? t->begun_what : "(loading the plugins)", "FAIL", why);
    fflush(stdout);
    return died_in;
}

/* the plugin at path, loaded beside the others (NNR_PLUGIN_PATH gets it first); its name, or NULL */
static const char *plugin_name(const char *path, char *buf, size_t n)
{
    pid_t pid;
    int fds[2];
    if (pipe(fds) != 0) return NULL;
    /* the name is read in a child too: loading plugins in the parent would initialise drivers */
    if ((pid = fork()) == 0) {
        close(fds[0]);
        char real[4096];
        const char *name = "";
        if (realpath(path, real)) {
            for (int i = 0; i < nnr_plugin_count(); i++)
                if (strcmp(nnr_plugin_path(i), real) == 0) {
                    if (!nnr_plugin_loaded(i)) { dprintf(fds[1], "!%s was refused: %s", path, nnr_plugin_message(i)); _exit(1); }
                    name = nnr_plugin_name(i);
                }
            if (!*name) { dprintf(fds[1], "!%s was not loaded", path); _exit(1); }
        } else {
            dprintf(fds[1], "!cannot find %s", path);
            _exit(1);
        }
        dprintf(fds[1], "%s", name);
        _exit(0);
    }
    close(fds[1]);
    ssize_t got = read(fds[0], buf, n - 1);
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    buf[got > 0 ? got : 0] = 0;
    if (buf[0] == '!') { fprintf(stderr, "nnrun: %s\n", buf + 1); return NULL; }
    return buf[0] ? buf : NULL;
}

int nnrun_check_backend(const char *path, const char *ops)
{
    const char *old = getenv("NNR_PLUGIN_PATH");
    char *paths = malloc(strlen(path) + (old ? strlen(old) : 0) + 2);
    if (!paths) return 1;
    sprintf(paths, "%s%s%s", path, old ? ":" : "", old ? old : "");
    setenv("NNR_PLUGIN_PATH", paths, 1);
    free(paths);
    char name[128];
    if (!plugin_name(path, name, sizeof name)) return 1;
    printf("conformance of the %s backend (%s) against the host backend%s%s\n", name, path, ops ? ", ops matching " : "", ops ? ops : "");
    printf("  %-8s %-26s %-5s %-20s %-9s %s\n", "device", "op", "dtype", "variant", "result", "detail");
    tally t = {0};
    int from = 1;
    for (;;) {
        int died_in = supervise(name, ops, from, &t);
        if (died_in <= 0) break;
        from = died_in + 1;
    }
    if (t.skip_all) return 77;
    printf("summary: %d native, %d fallback, %d extension, %d skipped, %d failed\n", t.native, t.fallback, t.extension, t.skipped, t.failed);
    printf("%d passed, %d failed\n", t.native + t.fallback + t.extension, t.failed);
    return t.failed ? 1 : 0;
}
