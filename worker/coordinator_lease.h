// Which coordinator a worker belongs to, so that two coordinators never take turns with the
// same workers. A group epoch names its coordinator: the high 32 bits of
// LoadShardRequest.epoch are the coordinator instance's (random per process), the low bits
// count its groups. The coordinator that formed the worker's group holds a lease on the
// worker (LoadShardRequest.lease_ms) that each of its contacts renews (a probe carrying its
// epoch, a Step, a Release); while the lease runs, another coordinator's LoadShard is refused
// FAILED_PRECONDITION and its probes are told the worker is held. The holder ends the lease
// itself when it shuts down (ReleaseRequest.end_lease), so a successor need not wait.
//
// Thread-safe (Info renews it without the worker's model lock).
#ifndef LLMINT8_WORKER_COORDINATOR_LEASE_H_
#define LLMINT8_WORKER_COORDINATOR_LEASE_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/group_epoch.h"

namespace llmint8::worker {

class CoordinatorLease {
 public:
  // The worker now holds (or is loading) group `epoch`; its coordinator keeps it for `lease`
  // after each contact, counted from `now`. A zero lease never keeps it.
  void Grant(int64_t epoch, absl::Duration lease, absl::Time now);
  // No group held.
  void Clear();
  // A contact from group `epoch`'s coordinator: renews the lease when it is the held group.
  void Renew(int64_t epoch, absl::Time now);
  // The held group's coordinator lets go: the lease has lapsed from now on (a contact that
  // arrives later, e.g. a probe that was under way, does not renew it). False when `epoch` is
  // not the held group (nothing changes).
  bool End(int64_t epoch);

  // Whether the coordinator of the held group has let it go, or been silent for a (non-zero)
  // lease: nobody will finish what the group runs. False without a group.
  bool Gone(absl::Time now) const;
  // Whether the held group's coordinator has been silent for its (non-zero) lease and
  // `longer` more (it did not end the lease: it died, or was cut off). False without a group.
  bool SilentPast(absl::Duration longer, absl::Time now) const;
  // Whether another coordinator than `epoch`'s holds this worker at `now`.
  bool HeldByAnother(int64_t epoch, absl::Time now) const;
  // OK when `epoch`'s coordinator may form a group with this worker at `now`: no group is
  // held, it is the same coordinator's, or its lease lapsed. FAILED_PRECONDITION otherwise,
  // naming the held group and the lease.
  absl::Status CheckTake(int64_t epoch, absl::Time now) const;

 private:
  mutable absl::Mutex mu_;
  int64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Duration lease_ ABSL_GUARDED_BY(mu_);
  absl::Time last_contact_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool ended_ ABSL_GUARDED_BY(mu_) = false;  // End() for epoch_
};

}  // namespace llmint8::worker

#endif  // LLMINT8_WORKER_COORDINATOR_LEASE_H_
