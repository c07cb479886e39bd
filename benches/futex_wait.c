/* Futex waits that return at once (the word never holds the expected value): what a futex wait
 * costs, for looptop's futex hooks (a pool worker's park, issue 18). Made through libc's
 * syscall(), as Rust's std makes them. Prints nanoseconds per call. Usage: futex_wait [calls] */
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 2000000;
  static int word = 0;
  for (long i = 0; i < n / 10; i++) syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 1, NULL, NULL, 0);
  double t0 = now();
  for (long i = 0; i < n; i++) syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 1, NULL, NULL, 0);
  printf("%.1f\n", (now() - t0) / n);
  return 0;
}
