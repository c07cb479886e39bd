/* A tight loop of epoll_wait(..., 0) on an empty epoll set: every call is one tick of nothing,
 * so the time per call with the agent minus without is the agent's cost per tick.
 * Prints nanoseconds per call. Usage: epoll_tick [calls] */
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 2000000;
  int ep = epoll_create1(0);
  struct epoll_event ev;
  for (long i = 0; i < n / 10; i++) epoll_wait(ep, &ev, 1, 0); /* warm up */
  double t0 = now();
  for (long i = 0; i < n; i++) epoll_wait(ep, &ev, 1, 0);
  printf("%.1f\n", (now() - t0) / n);
  return 0;
}
