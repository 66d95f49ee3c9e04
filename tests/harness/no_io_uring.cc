// no_io_uring PROGRAM [ARGS...]: runs PROGRAM under a seccomp filter that
// refuses io_uring_setup(2) with EPERM, as the default seccomp profiles of
// recent container runtimes (containerd's, Docker's) do, so that a test sees
// what the proxy does in such a container. Every other system call is
// allowed. Exits 1 when the filter cannot be installed or PROGRAM not run.
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: no_io_uring PROGRAM [ARGS...]\n");
    return 1;
  }
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog program = {static_cast<unsigned short>(sizeof(filter) / sizeof(filter[0])), filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
      prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
    std::perror("no_io_uring: seccomp");
    return 1;
  }
  execv(argv[1], argv + 1);
  std::perror("no_io_uring: exec");
  return 1;
}
