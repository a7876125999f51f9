/*
 * The sandbox ("pause") process of the CRI tests' pods: it holds the pod's
 * namespaces and does nothing else. It sleeps in pause(), reaps any child
 * that ends up reparented to it (it is PID 1 of the pod's PID namespace when
 * the pod has one), and exits 0 on SIGTERM or SIGINT. Built statically so that
 * the image is this one file.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig)
{
    (void)sig;
    _exit(0);
}

static void on_child(int sig)
{
    int saved = errno;
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int handle(int sig, void (*fn)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv)
{
    static const char usage[] = "pause: holds a pod's namespaces until SIGTERM or SIGINT\n";
    if (argc > 1 && strcmp(argv[1], "-h") == 0) {
        return write(1, usage, sizeof usage - 1) < 0;
    }
    if (handle(SIGTERM, on_stop) || handle(SIGINT, on_stop) || handle(SIGCHLD, on_child)) {
        static const char msg[] = "pause: sigaction failed\n";
        (void)!write(2, msg, sizeof msg - 1);
        return 1;
    }
    for (;;) {
        pause();
    }
}
