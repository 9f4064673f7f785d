/* Round trip of one cache line between two threads pinned to two CPUs, in ns: about 50 ns
 * when the CPUs share an L3, several times that across dies. On a VM the host may move its
 * vCPUs between the two placements, and a 2-thread benchmark's rate moves with it.
 * Usage: core_round_trip CPU_A CPU_B [ROUND_TRIPS] -> prints the mean round trip in ns. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Atomic int turn = 0;
static _Atomic int ready = 0; /* the answering thread: 1 pinned, -1 could not pin */
static long trips = 1000000;

static int pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void* answer(void* arg) {
  if (pin(*(int*)arg) != 0) {
    atomic_store(&ready, -1);
    return NULL;
  }
  atomic_store(&ready, 1);
  for (long i = 0; i < trips; ++i) {
    while (atomic_load_explicit(&turn, memory_order_acquire) != 1) {
    }
    atomic_store_explicit(&turn, 0, memory_order_release);
  }
  return NULL;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s CPU_A CPU_B [ROUND_TRIPS]\n", argv[0]);
    return 2;
  }
  int a = atoi(argv[1]), b = atoi(argv[2]);
  if (argc > 3) trips = atol(argv[3]);
  if (trips < 1 || pin(a) != 0) {
    fprintf(stderr, "cannot pin to CPU %d or bad ROUND_TRIPS\n", a);
    return 2;
  }
  pthread_t other;
  if (pthread_create(&other, NULL, answer, &b) != 0) return 2;
  while (atomic_load(&ready) == 0) {
  }
  if (atomic_load(&ready) < 0) {
    pthread_join(other, NULL);
    fprintf(stderr, "cannot pin to CPU %d\n", b);
    return 2;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long i = 0; i < trips; ++i) {
    atomic_store_explicit(&turn, 1, memory_order_release);
    while (atomic_load_explicit(&turn, memory_order_acquire) != 0) {
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  pthread_join(other, NULL);
  printf("%.1f\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / trips);
  return 0;
}
