// Closing a refused connection without losing its answer, and without waiting for it.
//
// A server that writes a short answer (a 503) and closes at once loses it when the client's
// request is still unread: the kernel answers the close with a reset, and the client may read
// the reset instead of the answer. So the refused connection lingers: its end for writing is
// shut down (the client sees the answer and then the end), what the client sends is read and
// dropped, and it is closed at the client's end or after kLingerFor, whichever comes first.
// One thread (made at the first LingerAndClose, never ended) polls every lingering
// connection, so the thread that refused one goes back to accepting at once: a flood of
// silent connections past a server's capacity used to hold the accepting thread 100 ms each.
// At most kMaxLingering linger at once (their descriptors are the process's, which its gRPC
// server shares); past that a connection is closed at once (its answer may be lost to a reset).
//
// Thread-safe.
#ifndef LLMINT8_COORDINATOR_LINGERING_CLOSE_H_
#define LLMINT8_COORDINATOR_LINGERING_CLOSE_H_

#include <cstddef>

#include "absl/time/time.h"

namespace llmint8::coordinator {

inline constexpr absl::Duration kLingerFor = absl::Milliseconds(100);
inline constexpr size_t kMaxLingering = 64;

// Takes `fd` (a connected socket the caller has written its last bytes to): shuts down its
// writing end, and closes it later (see above). The caller must not use or close it again.
void LingerAndClose(int fd);

// How many connections linger now (for tests).
size_t LingeringConnections();

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_LINGERING_CLOSE_H_
