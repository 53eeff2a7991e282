/* A static probe run inside test containers: reports identity, allocates memory, forks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "ids")) {
        printf("uid=%d euid=%d gid=%d egid=%d\n", getuid(), geteuid(), getgid(), getegid());
        return 0;
    }
    if (argc > 2 && !strcmp(argv[1], "hog")) {
        long mb = atol(argv[2]);
        for (long i = 0; i < mb; i++) {
            char *p = malloc(1 << 20);
            if (!p) return 3;
            memset(p, 1, 1 << 20);
        }
        printf("survived\n");
        return 0;
    }
    if (argc > 2 && !strcmp(argv[1], "forks")) {
        int n = atoi(argv[2]), ok = 0, failed = 0;
        for (int i = 0; i < n; i++) {
            pid_t p = fork();
            if (p == 0) { sleep(2); _exit(0); }
            if (p < 0) failed++; else ok++;
        }
        printf("forked=%d failed=%d\n", ok, failed);
        fflush(stdout);
        while (wait(NULL) > 0) {}
        return 0;
    }
    fprintf(stderr, "usage: probe ids | hog MB | forks N\n");
    return 2;
}
