// ThreadSanitizer cannot see Debian's absl::Mutex: libabsl_synchronization is
// built without TSan's annotations and waits on futexes TSan does not
// intercept, so every field a Mutex guards would look raced. Preloaded
// (LD_PRELOAD, by scripts/tsan.sh) into the instrumented binaries, this
// interposes the Mutex, CondVar and Notification entry points (our code and
// gRPC call them through the PLT), calls the library's own, and tells TSan
// what each did: __tsan_acquire after a lock, __tsan_release before an
// unlock. Unlock releases after the call too: the unlocking thread evaluates
// waiters' Conditions inside it. Built with plain g++ (not instrumented): in
// a process without TSan (python, nginx) the hooks are absent and it only
// forwards. Debian 12's absl only (20220623, inline namespace debian3).
#include <dlfcn.h>
#include <absl/synchronization/mutex.h>
#include <absl/synchronization/notification.h>

extern "C" void __tsan_acquire(void* addr) __attribute__((weak));
extern "C" void __tsan_release(void* addr) __attribute__((weak));

namespace {
void Acq(const void* p) { if (__tsan_acquire) __tsan_acquire(const_cast<void*>(p)); }
void Rel(const void* p) { if (__tsan_release) __tsan_release(const_cast<void*>(p)); }
template <typename F> F Next(const char* name) {
  void* f = dlsym(RTLD_NEXT, name);
  if (f == nullptr) {  // absl loaded by a dlopen (RTLD_LOCAL), as python's grpc does
    void* lib = dlopen("libabsl_synchronization.so.20220623", RTLD_LAZY | RTLD_NOLOAD);
    if (lib != nullptr) f = dlsym(lib, name);
  }
  if (f == nullptr) __builtin_trap();
  return reinterpret_cast<F>(f);
}
}  // namespace

#define ORIG(type, mangled) static auto orig = Next<type>(mangled)

namespace absl {
inline namespace debian3 {

void Mutex::Lock() {
  ORIG(void (*)(Mutex*), "_ZN4absl7debian35Mutex4LockEv");
  orig(this); Acq(this);
}
void Mutex::ReaderLock() {
  ORIG(void (*)(Mutex*), "_ZN4absl7debian35Mutex10ReaderLockEv");
  orig(this); Acq(this);
}
bool Mutex::TryLock() {
  ORIG(bool (*)(Mutex*), "_ZN4absl7debian35Mutex7TryLockEv");
  bool r = orig(this); if (r) Acq(this); return r;
}
bool Mutex::ReaderTryLock() {
  ORIG(bool (*)(Mutex*), "_ZN4absl7debian35Mutex13ReaderTryLockEv");
  bool r = orig(this); if (r) Acq(this); return r;
}
void Mutex::Unlock() {
  ORIG(void (*)(Mutex*), "_ZN4absl7debian35Mutex6UnlockEv");
  Rel(this); orig(this); Rel(this);  // conditions run in the unlocker
}
void Mutex::ReaderUnlock() {
  ORIG(void (*)(Mutex*), "_ZN4absl7debian35Mutex12ReaderUnlockEv");
  Rel(this); orig(this); Rel(this);  // conditions run in the unlocker
}
void Mutex::LockWhen(const Condition& c) {
  ORIG(void (*)(Mutex*, const Condition&), "_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  orig(this, c); Acq(this);
}
void Mutex::ReaderLockWhen(const Condition& c) {
  ORIG(void (*)(Mutex*, const Condition&),
       "_ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE");
  orig(this, c); Acq(this);
}
bool Mutex::LockWhenWithTimeout(const Condition& c, Duration d) {
  ORIG(bool (*)(Mutex*, const Condition&, Duration),
       "_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  bool r = orig(this, c, d); Acq(this); return r;
}
bool Mutex::LockWhenWithDeadline(const Condition& c, Time t) {
  ORIG(bool (*)(Mutex*, const Condition&, Time),
       "_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  bool r = orig(this, c, t); Acq(this); return r;
}
void Mutex::Await(const Condition& c) {
  ORIG(void (*)(Mutex*, const Condition&), "_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE");
  Rel(this); orig(this, c); Acq(this);
}
bool Mutex::AwaitWithTimeout(const Condition& c, Duration d) {
  ORIG(bool (*)(Mutex*, const Condition&, Duration),
       "_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Rel(this); bool r = orig(this, c, d); Acq(this); return r;
}
bool Mutex::AwaitWithDeadline(const Condition& c, Time t) {
  ORIG(bool (*)(Mutex*, const Condition&, Time),
       "_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Rel(this); bool r = orig(this, c, t); Acq(this); return r;
}
void CondVar::Wait(Mutex* mu) {
  ORIG(void (*)(CondVar*, Mutex*), "_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");
  Rel(mu); orig(this, mu); Acq(mu);
}
bool CondVar::WaitWithTimeout(Mutex* mu, Duration d) {
  ORIG(bool (*)(CondVar*, Mutex*, Duration),
       "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  Rel(mu); bool r = orig(this, mu, d); Acq(mu); return r;
}
bool CondVar::WaitWithDeadline(Mutex* mu, Time t) {
  ORIG(bool (*)(CondVar*, Mutex*, Time),
       "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  Rel(mu); bool r = orig(this, mu, t); Acq(mu); return r;
}
void Notification::Notify() {
  ORIG(void (*)(Notification*), "_ZN4absl7debian312Notification6NotifyEv");
  Rel(this); orig(this); Rel(this);  // conditions run in the unlocker
}
void Notification::WaitForNotification() const {
  ORIG(void (*)(const Notification*), "_ZNK4absl7debian312Notification19WaitForNotificationEv");
  orig(this); Acq(this);
}
bool Notification::WaitForNotificationWithTimeout(Duration d) const {
  ORIG(bool (*)(const Notification*, Duration),
       "_ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  bool r = orig(this, d); Acq(this); return r;
}
bool Notification::WaitForNotificationWithDeadline(Time t) const {
  ORIG(bool (*)(const Notification*, Time),
       "_ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
  bool r = orig(this, t); Acq(this); return r;
}
void ReleasableMutexLock::Release() {
  ORIG(void (*)(ReleasableMutexLock*), "_ZN4absl7debian319ReleasableMutexLock7ReleaseEv");
  Rel(*reinterpret_cast<void**>(this)); orig(this);
}

}  // namespace debian3
}  // namespace absl
