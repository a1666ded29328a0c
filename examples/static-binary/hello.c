/*
 * A tiny command-line program, linked statically so that its image needs nothing but itself:
 * no libc, no shell, no /etc. It greets its arguments and says which user it runs as.
 */
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s NAME...\n", argv[0]);
    return 2;
  }
  for (int i = 1; i < argc; i++) {
    printf("hello, %s!\n", argv[i]);
  }
  printf("(a static binary, running as uid %u, gid %u)\n", (unsigned)getuid(), (unsigned)getgid());
  return 0;
}
