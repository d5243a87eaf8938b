/* LD_PRELOAD shim for bench/no_amx.sh: refuses the AMX tile-data permission that onnxruntime's MLAS
 * and oneDNN ask Linux for (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), through libc's
 * syscall()) before they use AMX. Refused, both fall back to their AVX-512 (VNNI) kernels, so an AMX
 * Xeon runs the int8 and fp32 paths of a Xeon without AMX. Every other syscall() goes to libc. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>

#define SYS_ARCH_PRCTL 158            /* x86_64 */
#define ARCH_REQ_XCOMP_PERM 0x1023

long syscall(long number, ...) {
    static long (*real)(long, ...) = 0;
    long a[6];
    va_list ap;
    va_start(ap, number);
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_ARCH_PRCTL && a[0] == ARCH_REQ_XCOMP_PERM) {
        errno = EPERM;
        return -1;
    }
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
