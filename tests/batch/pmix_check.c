/* A PMIx client (Debian's libpmix, as Open MPI and PMIx-native programs use it) in a step
 * served PMIx by berth (--mpi=pmix): init, the job's size and this rank's local rank from
 * the server, put and commit a value, a fence that collects every rank's data, the next
 * rank's value, finalize. */
#include <pmix.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    pmix_proc_t me, job, next;
    pmix_value_t *v = NULL;
    if (PMIx_Init(&me, NULL, 0) != PMIX_SUCCESS) {
        fprintf(stderr, "PMIx_Init failed\n");
        return 1;
    }
    PMIX_LOAD_PROCID(&job, me.nspace, PMIX_RANK_WILDCARD);
    if (PMIx_Get(&job, PMIX_JOB_SIZE, NULL, 0, &v) != PMIX_SUCCESS) {
        fprintf(stderr, "rank %u: no job size\n", me.rank);
        return 1;
    }
    unsigned size = v->data.uint32;
    PMIX_VALUE_RELEASE(v);
    if (PMIx_Get(&me, PMIX_LOCAL_RANK, NULL, 0, &v) != PMIX_SUCCESS) {
        fprintf(stderr, "rank %u: no local rank\n", me.rank);
        return 1;
    }
    unsigned local = v->data.uint16;
    PMIX_VALUE_RELEASE(v);
    char text[64];
    snprintf(text, sizeof text, "rank %u was here", me.rank);
    pmix_value_t mine;
    PMIX_VALUE_LOAD(&mine, text, PMIX_STRING);
    pmix_info_t collect;
    bool yes = true;
    PMIX_INFO_LOAD(&collect, PMIX_COLLECT_DATA, &yes, PMIX_BOOL);
    if (PMIx_Put(PMIX_GLOBAL, "card", &mine) != PMIX_SUCCESS || PMIx_Commit() != PMIX_SUCCESS
        || PMIx_Fence(&job, 1, &collect, 1) != PMIX_SUCCESS) {
        fprintf(stderr, "rank %u: put, commit or fence failed\n", me.rank);
        return 1;
    }
    PMIX_LOAD_PROCID(&next, me.nspace, (me.rank + 1) % size);
    if (PMIx_Get(&next, "card", NULL, 0, &v) != PMIX_SUCCESS) {
        fprintf(stderr, "rank %u: no value from rank %u\n", me.rank, next.rank);
        return 1;
    }
    printf("rank %u of %u, local %u, from %u: %s\n", me.rank, size, local, next.rank,
           v->data.string);
    PMIX_VALUE_RELEASE(v);
    return PMIx_Finalize(NULL, 0) == PMIX_SUCCESS ? 0 : 1;
}
