/* C guest built with Debian's clang + wasi-libc (see ../../build.sh).
 *
 * main prints "hello from C". The extra export `greet` lets tests run an
 * entrypoint of the form `/hello.wasm#greet`: it uses write(2) directly so it
 * works even when called without main having run.
 *
 * `hello.wasm mkdirat DIR NAME` and `hello.wasm unlinkat DIR NAME` open DIR
 * and make or remove NAME relative to that folder's own descriptor, which is
 * what a WASI runtime checks against the rights a folder opened below a
 * preopen inherits (wasi-libc's path functions work from the preopen itself).
 * They print "done" or "error: <what>: <strerror> (errno N)" and exit 0 or 3. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

__attribute__((export_name("greet"))) void greet(void) {
    static const char msg[] = "greet called\n";
    (void)write(1, msg, sizeof msg - 1);
}

static int at_dir(const char *what, const char *dir, const char *name) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
        fprintf(stderr, "error: open %s: %s (errno %d)\n", dir, strerror(errno), errno);
        return 3;
    }
    int rc = strcmp(what, "mkdirat") == 0 ? mkdirat(fd, name, 0755) : unlinkat(fd, name, 0);
    if (rc != 0) {
        fprintf(stderr, "error: %s %s in %s: %s (errno %d)\n", what, name, dir, strerror(errno),
                errno);
        return 3;
    }
    puts("done");
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && (strcmp(argv[1], "mkdirat") == 0 || strcmp(argv[1], "unlinkat") == 0)) {
        return at_dir(argv[1], argv[2], argv[3]);
    }
    puts("hello from C");
    return 0;
}
