/* A PMI-2 client on Slurm's own libpmi2 (Debian's libpmi2-0), as MPI libraries linked
 * with it (Intel MPI's I_MPI_PMI_LIBRARY, Open MPI's s2) start under srun --mpi=pmi2:
 * init, job id, process mapping, put, fence, the next rank's value, finalize. */
#include <slurm/pmi2.h>
#include <stdio.h>

int main(void)
{
    int spawned, size, rank, appnum, found = 0, len = 0;
    char jobid[256], mapping[1024], key[64], value[128];
    if (PMI2_Init(&spawned, &size, &rank, &appnum) != PMI2_SUCCESS) {
        fprintf(stderr, "PMI2_Init failed\n");
        return 1;
    }
    if (PMI2_Job_GetId(jobid, sizeof jobid) != PMI2_SUCCESS
        || PMI2_Info_GetJobAttr("PMI_process_mapping", mapping, sizeof mapping, &found)
               != PMI2_SUCCESS) {
        fprintf(stderr, "rank %d: no job id or mapping\n", rank);
        return 1;
    }
    snprintf(key, sizeof key, "card-%d", rank);
    snprintf(value, sizeof value, "rank %d was here", rank);
    if (PMI2_KVS_Put(key, value) != PMI2_SUCCESS || PMI2_KVS_Fence() != PMI2_SUCCESS) {
        fprintf(stderr, "rank %d: put or fence failed\n", rank);
        return 1;
    }
    int next = (rank + 1) % size;
    snprintf(key, sizeof key, "card-%d", next);
    if (PMI2_KVS_Get(jobid, PMI2_ID_NULL, key, value, sizeof value, &len) != PMI2_SUCCESS) {
        fprintf(stderr, "rank %d: no value from rank %d\n", rank, next);
        return 1;
    }
    printf("rank %d of %d, mapping %s, from %d: %s\n", rank, size, found ? mapping : "none",
           next, value);
    return PMI2_Finalize() == PMI2_SUCCESS ? 0 : 1;
}
