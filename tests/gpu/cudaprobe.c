/* Checks CUDA through the driver API alone (libcuda, as berth injects it): devices, memory,
 * and a kernel compiled from PTX by the driver's JIT (libnvidia-ptxjitcompiler) run on the GPU. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult; typedef int CUdevice; typedef void *CUcontext; typedef void *CUmodule;
typedef void *CUfunction; typedef unsigned long long CUdeviceptr;

static const char ptx[] =
".version 7.0\n.target sm_50\n.address_size 64\n"
".visible .entry add_index(.param .u64 p, .param .u32 n)\n{\n"
" .reg .pred %p1;\n .reg .b32 %r<7>;\n .reg .b64 %rd<5>;\n"
" ld.param.u64 %rd1, [p];\n ld.param.u32 %r1, [n];\n"
" mov.u32 %r2, %ctaid.x;\n mov.u32 %r3, %ntid.x;\n mov.u32 %r4, %tid.x;\n"
" mad.lo.s32 %r5, %r2, %r3, %r4;\n setp.ge.u32 %p1, %r5, %r1;\n @%p1 bra DONE;\n"
" cvta.to.global.u64 %rd2, %rd1;\n mul.wide.u32 %rd3, %r5, 4;\n add.s64 %rd4, %rd2, %rd3;\n"
" ld.global.u32 %r6, [%rd4];\n add.s32 %r6, %r6, %r5;\n st.global.u32 [%rd4], %r6;\n"
"DONE:\n ret;\n}\n";

static void *lib;
static void *sym(const char *name) {
    void *f = dlsym(lib, name);
    if (!f) { fprintf(stderr, "cudaprobe: %s missing from libcuda\n", name); exit(2); }
    return f;
}
#define CHECK(call) do { CUresult r_ = (call); if (r_) { \
    fprintf(stderr, "cudaprobe: %s failed: %d\n", #call, r_); return 1; } } while (0)

int main(void) {
    lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) { fprintf(stderr, "cudaprobe: %s\n", dlerror()); return 2; }
    CUresult (*cuInit)(unsigned) = sym("cuInit");
    CUresult (*cuDeviceGetCount)(int *) = sym("cuDeviceGetCount");
    CUresult (*cuDeviceGet)(CUdevice *, int) = sym("cuDeviceGet");
    CUresult (*cuDeviceGetName)(char *, int, CUdevice) = sym("cuDeviceGetName");
    CUresult (*cuDeviceTotalMem)(size_t *, CUdevice) = sym("cuDeviceTotalMem_v2");
    CUresult (*cuDriverGetVersion)(int *) = sym("cuDriverGetVersion");
    CUresult (*cuPrimaryCtxRetain)(CUcontext *, CUdevice) = sym("cuDevicePrimaryCtxRetain");
    CUresult (*cuPrimaryCtxRelease)(CUdevice) = sym("cuDevicePrimaryCtxRelease_v2");
    CUresult (*cuCtxSetCurrent)(CUcontext) = sym("cuCtxSetCurrent");
    CUresult (*cuMemAlloc)(CUdeviceptr *, size_t) = sym("cuMemAlloc_v2");
    CUresult (*cuMemFree)(CUdeviceptr) = sym("cuMemFree_v2");
    CUresult (*cuMemsetD32)(CUdeviceptr, unsigned, size_t) = sym("cuMemsetD32_v2");
    CUresult (*cuMemcpyDtoH)(void *, CUdeviceptr, size_t) = sym("cuMemcpyDtoH_v2");
    CUresult (*cuModuleLoadData)(CUmodule *, const void *) = sym("cuModuleLoadData");
    CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *) = sym("cuModuleGetFunction");
    CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                               unsigned, unsigned, void *, void **, void **) = sym("cuLaunchKernel");
    CUresult (*cuCtxSynchronize)(void) = sym("cuCtxSynchronize");

    CHECK(cuInit(0));
    int version = 0, count = 0;
    CHECK(cuDriverGetVersion(&version));
    CHECK(cuDeviceGetCount(&count));
    printf("cudaprobe: CUDA driver API %d.%d, %d device(s), CUDA_VISIBLE_DEVICES=%s\n",
           version / 1000, version % 1000 / 10, count,
           getenv("CUDA_VISIBLE_DEVICES") ? getenv("CUDA_VISIBLE_DEVICES") : "(unset)");
    for (int i = 0; i < count; i++) {
        CUdevice dev; char name[256]; size_t mem = 0;
        CHECK(cuDeviceGet(&dev, i));
        CHECK(cuDeviceGetName(name, sizeof name, dev));
        CHECK(cuDeviceTotalMem(&mem, dev));
        printf("cudaprobe: device %d: %s, %zu MiB\n", i, name, mem >> 20);
    }
    if (count == 0) return 1;
    CUdevice dev; CUcontext ctx; CUmodule mod; CUfunction fn; CUdeviceptr buf;
    unsigned n = 1 << 20;
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuPrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuMemAlloc(&buf, n * 4));
    CHECK(cuMemsetD32(buf, 7, n));
    CHECK(cuModuleLoadData(&mod, ptx));
    CHECK(cuModuleGetFunction(&fn, mod, "add_index"));
    void *args[] = { &buf, &n };
    CHECK(cuLaunchKernel(fn, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
    CHECK(cuCtxSynchronize());
    unsigned *host = malloc(n * 4);
    CHECK(cuMemcpyDtoH(host, buf, n * 4));
    unsigned bad = 0;
    for (unsigned i = 0; i < n; i++) bad += host[i] != 7 + i;
    CHECK(cuMemFree(buf));
    CHECK(cuPrimaryCtxRelease(dev));
    printf("cudaprobe: kernel from PTX ran on the GPU over %u values: %s\n", n,
           bad ? "WRONG RESULTS" : "all correct");
    return bad != 0;
}
