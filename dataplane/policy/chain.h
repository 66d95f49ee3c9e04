// Puts a route's compiled policies in the order they run: by phase
// (http::FilterPhase), the written order within a phase; and several
// authentication policies become one filter meaning "any of them".
//
// Config thread; the result is immutable and shared by the workers.
#ifndef SLUICE_DATAPLANE_POLICY_CHAIN_H_
#define SLUICE_DATAPLANE_POLICY_CHAIN_H_

#include <memory>
#include <vector>

#include "dataplane/http/filter.h"

namespace sluice::policy {

using FactoryList = std::vector<std::shared_ptr<const http::FilterFactory>>;

// Stable-sorts `chain` by phase. Two or more authentication policies are
// replaced (at the first one's place) by one filter that tries them in
// order: the first to identify a consumer wins and the others do not run;
// an anonymous consumer (a policy's `anonymous`) is taken only when none
// identifies one; when all refuse, the first refusal is the answer, with
// the WWW-Authenticate challenges of all of them. A RejectRequest (a
// malformed credential) is the answer at once.
FactoryList OrderChain(FactoryList chain);

}  // namespace sluice::policy

#endif  // SLUICE_DATAPLANE_POLICY_CHAIN_H_
