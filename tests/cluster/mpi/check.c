/* berth's MPI check: every rank reports where it runs, an allreduce is verified, and
 * ranks 0 and 1 measure a ping-pong (8 bytes: latency, 1 MiB: bandwidth).
 *
 *   check [LATENCY_ROUNDS [BANDWIDTH_ROUNDS]]      (defaults 1000 and 50)
 *
 * Rank 0 prints, in order: "size N", one "rank R host H" line per rank, "allreduce ok"
 * (or "allreduce wrong ..." and exit 1), "latency_us X" and "bandwidth_MBps Y" (MB = 1e6
 * bytes; with two ranks or more, and rounds above 0: `check 0 0` only starts and ends),
 * "done".
 *
 *   check abort CODE       the last rank calls MPI_Abort(CODE) after MPI_Init; the others
 *                          wait in a barrier it never reaches (until the launcher kills them) */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HOST_LEN 64
#define BIG (1 << 20)

static double pingpong(int rank, char *buf, int bytes, int rounds) {
    MPI_Barrier(MPI_COMM_WORLD);
    double start = MPI_Wtime();
    for (int i = 0; i < rounds; i++) {
        if (rank == 0) {
            MPI_Send(buf, bytes, MPI_CHAR, 1, 0, MPI_COMM_WORLD);
            MPI_Recv(buf, bytes, MPI_CHAR, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else if (rank == 1) {
            MPI_Recv(buf, bytes, MPI_CHAR, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(buf, bytes, MPI_CHAR, 0, 0, MPI_COMM_WORLD);
        }
    }
    return MPI_Wtime() - start;
}

int main(int argc, char **argv) {
    int rank, size;
    int lat_rounds = argc > 1 ? atoi(argv[1]) : 1000;
    int bw_rounds = argc > 2 ? atoi(argv[2]) : 50;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc > 2 && strcmp(argv[1], "abort") == 0) {
        if (rank == size - 1)
            MPI_Abort(MPI_COMM_WORLD, atoi(argv[2]));
        MPI_Barrier(MPI_COMM_WORLD);
        return 0;
    }

    char host[HOST_LEN] = {0};
    gethostname(host, HOST_LEN - 1);
    char *hosts = rank == 0 ? calloc((size_t)size, HOST_LEN) : NULL;
    MPI_Gather(host, HOST_LEN, MPI_CHAR, hosts, HOST_LEN, MPI_CHAR, 0, MPI_COMM_WORLD);

    long mine = rank + 1, sum = 0;
    MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    long expected = (long)size * (size + 1) / 2;

    if (rank == 0) {
        printf("size %d\n", size);
        for (int r = 0; r < size; r++)
            printf("rank %d host %s\n", r, hosts + (size_t)r * HOST_LEN);
        if (sum == expected)
            printf("allreduce ok\n");
        else
            printf("allreduce wrong: %ld, expected %ld\n", sum, expected);
        fflush(stdout);
    }
    if (size >= 2 && lat_rounds > 0 && bw_rounds > 0) {
        char *buf = calloc(BIG, 1);
        pingpong(rank, buf, 8, 10); /* warm up */
        double lat = pingpong(rank, buf, 8, lat_rounds);
        double bw = pingpong(rank, buf, BIG, bw_rounds);
        if (rank == 0) {
            printf("latency_us %.2f\n", lat / lat_rounds / 2 * 1e6);
            printf("bandwidth_MBps %.0f\n", 2.0 * BIG * bw_rounds / bw / 1e6);
        }
        free(buf);
    }
    if (rank == 0) {
        printf("done\n");
        fflush(stdout);
    }
    MPI_Finalize();
    return sum == expected ? 0 : 1;
}
