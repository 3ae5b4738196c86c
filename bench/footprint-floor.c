/* The floor the agent's trail sampling is held to: the cost per cgroup of reading each listed
 * cgroup's usage file by open/read/close, and by pread on descriptors kept open.
 * usage: footprint-floor <file listing usage files, one a line> <rounds>
 * prints: <open/read/close us per cgroup> <pread us per cgroup> (medians over rounds) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  FILE *f = fopen(argv[1], "r");
  if (!f) return 1;
  int rounds = atoi(argv[2]), n = 0, cap = 1024;
  char **paths = malloc(cap * sizeof *paths);
  char line[4096], buf[64];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    if (n == cap) paths = realloc(paths, (cap *= 2) * sizeof *paths);
    paths[n++] = strdup(line);
  }
  fclose(f);
  if (n == 0 || rounds < 1) return 1;
  double *orc = malloc(rounds * sizeof *orc), *pr = malloc(rounds * sizeof *pr);
  int *fds = malloc(n * sizeof *fds);
  for (int r = 0; r < rounds; r++) {
    double t0 = now_us();
    for (int i = 0; i < n; i++) {
      int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
      if (fd < 0 || read(fd, buf, sizeof buf) < 0) return 1;
      close(fd);
    }
    orc[r] = (now_us() - t0) / n;
  }
  for (int i = 0; i < n; i++)
    if ((fds[i] = open(paths[i], O_RDONLY | O_CLOEXEC)) < 0) return 1;
  for (int r = 0; r < rounds; r++) {
    double t0 = now_us();
    for (int i = 0; i < n; i++)
      if (pread(fds[i], buf, sizeof buf, 0) < 0) return 1;
    pr[r] = (now_us() - t0) / n;
  }
  qsort(orc, rounds, sizeof *orc, cmp);
  qsort(pr, rounds, sizeof *pr, cmp);
  printf("%.3f %.3f\n", orc[rounds / 2], pr[rounds / 2]);
  return 0;
}
