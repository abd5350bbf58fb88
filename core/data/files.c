/* Opening the files a user names as data: regular files only, and never a wait. A FIFO, a device or
 * a socket given as a checkpoint, a corpus or a tokenizer would block open() or read() forever (or
 * read without end); it is opened without blocking, refused after fstat, and only a regular file
 * goes on (in blocking mode again). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "data/internal.h"

int nnr_open_regular(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) { int e = errno; close(fd); errno = e; return -1; }
    if (!S_ISREG(st.st_mode)) { close(fd); errno = S_ISDIR(st.st_mode) ? EISDIR : NNR_ENOTREG; return -1; }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) { int e = errno; close(fd); errno = e; return -1; }
    return fd;
}

FILE *nnr_fopen_regular(const char *path)
{
    int fd = nnr_open_regular(path);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) { int e = errno; close(fd); errno = e; }
    return f;
}

const char *nnr_open_strerror(int e)
{
    return e == NNR_ENOTREG ? "not a regular file (a pipe, a device or a socket)" : strerror(e);
}
