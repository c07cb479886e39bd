/* One long stall for benches/unwind_cost.sh: waits in epoll for START_MS (looptop attaches), then
 * spins SPIN_MS inside one tick through a chain of calls built without frame pointers, and prints
 * the rounds it did per millisecond (what the stack copies of every stall sample slow down).
 * Build: cc -O2 -fomit-frame-pointer -fno-inline -o spin_stall spin_stall.c */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

__attribute__((noinline)) uint64_t spin(double ms, uint64_t *rounds) {
  uint64_t h = 1469598103934665603ULL;
  double t0 = now_ms();
  for (uint64_t r = 1;; r++) {
    for (int i = 0; i < 64; i++) h = (h ^ (uint64_t)i) * 1099511628211ULL;
    if ((r & 1023) == 0 && now_ms() - t0 >= ms) {
      *rounds = r;
      break;
    }
  }
  return h;
}

__attribute__((noinline)) uint64_t handle(double ms, uint64_t *rounds) { return spin(ms, rounds) ^ 1; }

int main(int argc, char **argv) {
  long start = argc > 1 ? atol(argv[1]) : 1500, ms = argc > 2 ? atol(argv[2]) : 5000;
  int ep = epoll_create1(0);
  struct epoll_event ev;
  epoll_wait(ep, &ev, 1, (int)start);
  uint64_t rounds = 0;
  uint64_t h = handle((double)ms, &rounds);
  epoll_wait(ep, &ev, 1, 100);
  printf("%.1f\n", (double)rounds / ms + (double)(h & 0) );
  return 0;
}
