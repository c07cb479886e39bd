/* Sleeps inside one tick, for benches/unwind_cost.sh: waits in epoll for START_MS (looptop
 * attaches), then in one tick makes ROUNDS round trips with a helper thread over two pipes (the
 * loop thread sleeps in `read` each time: an off-CPU switch inside a tick), and prints the round
 * trips per millisecond. Build: cc -O2 -pthread -o pingpong_tick pingpong_tick.c */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

static int ping[2], pong[2];

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *helper(void *arg) {
  char c;
  (void)arg;
  while (read(ping[0], &c, 1) == 1) {
    if (write(pong[1], &c, 1) != 1) break;
  }
  return NULL;
}

int main(int argc, char **argv) {
  long start = argc > 1 ? atol(argv[1]) : 1500, rounds = argc > 2 ? atol(argv[2]) : 100000;
  if (pipe(ping) || pipe(pong)) return 1;
  pthread_t t;
  pthread_create(&t, NULL, helper, NULL);
  int ep = epoll_create1(0);
  struct epoll_event ev;
  epoll_wait(ep, &ev, 1, (int)start);
  double t0 = now_ms();
  char c = 'x';
  for (long i = 0; i < rounds; i++) {
    if (write(ping[1], &c, 1) != 1 || read(pong[0], &c, 1) != 1) return 1;
  }
  double ms = now_ms() - t0;
  epoll_wait(ep, &ev, 1, 100);
  printf("%.1f\n", rounds / ms);
  return 0;
}
