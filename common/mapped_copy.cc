#include "common/mapped_copy.h"

#include <setjmp.h>
#include <signal.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace llmint8 {
namespace {

thread_local sigjmp_buf* t_copy_jump = nullptr;
struct sigaction g_previous {};
std::once_flag g_installed;

void OnSigbus(int signal, siginfo_t* info, void* context) {
  if (sigjmp_buf* jump = t_copy_jump; jump != nullptr) siglongjmp(*jump, 1);
  // A fault outside a copy: what was there before.
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(signal, info, context);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN &&
      g_previous.sa_handler != nullptr) {
    g_previous.sa_handler(signal);
    return;
  }
  // The default: end the process by this signal (the faulting read runs again, unhandled).
  ::signal(SIGBUS, SIG_DFL);
}

void Install() {
  struct sigaction action {};
  action.sa_sigaction = OnSigbus;
  action.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGBUS, &action, &g_previous);
}

}  // namespace

bool CopyFromMapping(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return true;  // an empty file's mapping may be null (memcpy's must not be)
  std::call_once(g_installed, Install);
  sigjmp_buf jump;
  // The signal mask is not saved (that is a system call per copy): the handler runs with the
  // mask of the copy (SA_NODEFER, no sa_mask), so jumping out of it leaves that mask.
  if (sigsetjmp(jump, /*savemask=*/0) != 0) {
    t_copy_jump = nullptr;
    return false;
  }
  t_copy_jump = &jump;
  std::atomic_signal_fence(std::memory_order_seq_cst);  // armed before the first read
  std::memcpy(dst, src, bytes);
  std::atomic_signal_fence(std::memory_order_seq_cst);  // every read done before disarming
  t_copy_jump = nullptr;
  return true;
}

}  // namespace llmint8
