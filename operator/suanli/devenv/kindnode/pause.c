/*
 * The pod sandbox's first process, built here because no image registry can be reached.
 *
 * It does what a pod sandbox's "pause" container must: hold the pod's namespaces by staying
 * alive, exit cleanly when the runtime stops the sandbox (SIGINT or SIGTERM), and reap any
 * zombie that ends up parented to it (it is PID 1 when the pod shares its PID namespace).
 * Linked statically, so its image needs no other file.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signal_number) {
    (void)signal_number;
    _exit(0);
}

static void reap(int signal_number) {
    (void)signal_number;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("pause (suanli, built from source)");
        return 0;
    }
    if (getpid() != 1) {
        fputs("pause: not running as PID 1\n", stderr);
    }
    struct sigaction on_stop;
    memset(&on_stop, 0, sizeof on_stop);
    on_stop.sa_handler = stop;
    sigaction(SIGINT, &on_stop, NULL);
    sigaction(SIGTERM, &on_stop, NULL);
    struct sigaction on_child;
    memset(&on_child, 0, sizeof on_child);
    on_child.sa_handler = reap;
    on_child.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &on_child, NULL);
    for (;;) {
        pause();
    }
}
