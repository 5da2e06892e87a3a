// The cost of tract-linalg 0.23.9's avx2_mmm_i32_8x8 inner loop step on this CPU, with the legacy
// SSE `movq xmm8, [rax]` it uses (x86_64/fma/avx2_mmm_i32_8x8.S.j2:120) and with the VEX
// `vmovq` that would avoid mixing SSE and AVX encodings while the upper ymm halves are live
// (benches/INT8.md part D).
//
//   gcc -O2 -mavx2 benches/sse_avx_mix.c -o /tmp/sse_avx_mix && /tmp/sse_avx_mix
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static int8_t buf[64] __attribute__((aligned(32)));

#define STEP(load)                                                                        \
  __asm__ volatile(load " (%0), %%xmm8\n vpmovsxbw %%xmm8, %%ymm8\n"                       \
                   " vpbroadcastb (%0), %%ymm9\n vpmovsxbw %%xmm9, %%ymm9\n"               \
                   " vpmullw %%ymm9, %%ymm8, %%ymm9\n vpaddd %%ymm9, %%ymm0, %%ymm0" ::"r"(buf) \
                   : "xmm8", "xmm9", "xmm0")

static double ns_per_step(int vex, long n) {
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (long i = 0; i < n; i++) {
    if (vex)
      STEP("vmovq");
    else
      STEP("movq");
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
}

int main(void) {
  for (int r = 0; r < 3; r++)
    printf("legacy SSE movq: %7.2f ns per step   VEX vmovq: %5.2f ns per step\n",
           ns_per_step(0, 5000000), ns_per_step(1, 5000000));
  return 0;
}
